{{- define "sih.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sih.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sih.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sih.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sih.serviceAccountName" -}}
{{- default (include "sih.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "sih.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sih.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sih.labels" -}}
{{ include "sih.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
spot-interrupt-handler/mode: {{ .Values.mode }}
{{- end -}}

{{/* The ConfigMap holding the webhook template: the user's, or ours made from webhook.template. */}}
{{- define "sih.templateConfigMap" -}}
{{- if .Values.webhook.templateConfigMap -}}
{{- .Values.webhook.templateConfigMap -}}
{{- else if .Values.webhook.template -}}
{{- printf "%s-webhook" (include "sih.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the webhook's URL and headers: the user's, or ours made from
webhook.url and webhook.headers. */}}
{{- define "sih.webhookSecret" -}}
{{- if .Values.webhook.secretName -}}
{{- .Values.webhook.secretName -}}
{{- else if or .Values.webhook.url .Values.webhook.headers .Values.webhook.proxy -}}
{{- printf "%s-webhook" (include "sih.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The image by mode: the agent's (no queue mode, no AWS SDK) for imds, the full one for
queue; image.repository, when set, is the one for the mode being rendered. */}}
{{- define "sih.repository" -}}
{{- if .Values.image.repository -}}
{{- .Values.image.repository -}}
{{- else if eq .Values.mode "queue" -}}
spot-interrupt-handler
{{- else -}}
spot-interrupt-handler-agent
{{- end -}}
{{- end -}}

{{- define "sih.checkMode" -}}
{{- if not (has .Values.mode (list "imds" "queue")) -}}
{{- fail (printf "mode must be imds or queue, not %q" .Values.mode) -}}
{{- end -}}
{{- if not (has .Values.cloud (list "aws" "gce" "azure")) -}}
{{- fail (printf "cloud must be aws, gce or azure, not %q" .Values.cloud) -}}
{{- end -}}
{{- if and (eq .Values.mode "queue") (ne .Values.cloud "aws") -}}
{{- fail "mode queue reads EC2's queues: cloud must be aws" -}}
{{- end -}}
{{- if and (eq .Values.mode "queue") (not .Values.queue.url) -}}
{{- fail "mode queue needs queue.url" -}}
{{- end -}}
{{- if and (eq .Values.mode "queue") (hasSuffix "-agent" (toString .Values.image.repository)) -}}
{{- fail (printf "mode queue: image.repository %s is the agent's image, which has no queue mode (the controller would stop at start). Leave image.repository empty for the full image, spot-interrupt-handler" .Values.image.repository) -}}
{{- end -}}
{{- if eq .Values.mode "queue" -}}
{{- range $key, $value := .Values.nodeSelector -}}
{{- $avoided := get $.Values.queue.placement.offCapacity $key | default list -}}
{{- if has (toString $value) $avoided -}}
{{- fail (printf "mode queue: nodeSelector %s=%s selects the spot capacity the controller stays off (queue.placement.offCapacity): the Deployment would stay Pending. nodeSelector places the imds agents; drop it in queue mode, or allow that capacity with queue.placement.offCapacity.%s=null" $key (toString $value) $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod: the same for the DaemonSet (imds) and the Deployment (queue). */}}
{{- define "sih.podTemplate" -}}
metadata:
  labels:
    {{- include "sih.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- if .Values.webhook.template }}
    checksum/webhook-template: {{ .Values.webhook.template | sha256sum | trunc 16 }}
    {{- end }}
    {{- /* No checksum of the webhook Secret here: a hash of a secret is not for the pod spec.
    After changing webhook.url, .headers or .proxy: kubectl rollout restart (NOTES says so). */}}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "sih.serviceAccountName" . }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if eq .Values.mode "imds" }}
  hostNetwork: {{ .Values.hostNetwork }}
  {{- if .Values.hostNetwork }}
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  {{- end }}
  {{- $cloud := get .Values.clouds .Values.cloud | default dict }}
  {{- /* Linux only (the image is), as NTH's chart selects; the user's selector adds to it. */}}
  nodeSelector:
    {{- mergeOverwrite (dict "kubernetes.io/os" "linux") (deepCopy (.Values.nodeSelector | default dict)) | toYaml | nindent 4 }}
  {{- /* imds: every taint (an agent must run on the node it guards); queue: only what
  queue.tolerations says, never a lost node's NoExecute taints (a replica there must move). */}}
  {{- $tolerations := .Values.queue.tolerations | default list }}
  {{- if eq .Values.mode "imds" }}
  {{- $tolerations = concat (.Values.tolerations | default list) ($cloud.tolerations | default list) }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if and (eq .Values.mode "imds") (not .Values.nodeSelector) $cloud.spotNodeLabels }}
  {{- /* imds: the cloud's spot nodes, any of its labels */}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          {{- range $cloud.spotNodeLabels }}
          - matchExpressions:
              {{- range $key, $value := . }}
              - {key: {{ $key }}, operator: In, values: [{{ $value | quote }}]}
              {{- end }}
          {{- end }}
  {{- else if eq .Values.mode "queue" }}
  {{- /* queue: off spot capacity, replicas apart (queue.placement) */}}
  {{- if or .Values.queue.placement.offCapacity .Values.queue.placement.apart }}
  affinity:
    {{- with .Values.queue.placement.offCapacity }}
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              {{- range $key, $values := . }}
              - key: {{ $key }}
                operator: NotIn
                values: {{ toJson $values }}
              {{- end }}
    {{- end }}
    {{- if .Values.queue.placement.apart }}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "sih.selectorLabels" . | nindent 16 }}
    {{- end }}
  {{- end }}
  {{- if .Values.queue.placement.apart }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "sih.selectorLabels" . | nindent 10 }}
  {{- end }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: spot-interrupt-handler
      image: "{{ with .Values.image.registry }}{{ . }}/{{ end }}{{ include "sih.repository" . }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - {{ .Values.mode }}
        {{- if eq .Values.mode "queue" }}
        - --queue-url={{ .Values.queue.url }}
        {{- with .Values.queue.region }}
        - --aws-region={{ . }}
        {{- end }}
        {{- with .Values.queue.endpoint }}
        - --aws-endpoint={{ . }}
        {{- end }}
        - --workers={{ .Values.queue.workers }}
        {{- range $flag, $value := .Values.queue.flags }}
        {{- if not (kindIs "invalid" $value) }}
        - --{{ $flag }}={{ $value }}
        {{- end }}
        {{- end }}
        {{- else }}
        - --cloud={{ .Values.cloud }}
        {{- range $flag, $value := .Values.imds.flags }}
        {{- if not (kindIs "invalid" $value) }}
        - --{{ $flag }}={{ $value }}
        {{- end }}
        {{- end }}
        {{- end }}
        - --admin-listen=0.0.0.0:{{ .Values.adminPort }}
        {{- with .Values.clusterName }}
        - --cluster-name={{ . }}
        {{- end }}
        {{- if include "sih.templateConfigMap" . }}
        - --webhook-template-file=/etc/spot-interrupt-handler/webhook/{{ .Values.webhook.templateConfigMapKey }}
        {{- end }}
        {{- range $flags := list .Values.flags .Values.imds.flags .Values.queue.flags }}
        {{- range $secret := list "webhook-url" "webhook-headers" "webhook-proxy" }}
        {{- if hasKey $flags $secret }}
        {{- fail (printf "flags.%s would put a secret in the pod spec: set webhook.%s instead (kept in a Secret)" $secret (trimPrefix "webhook-" $secret)) }}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- range $flag, $value := .Values.flags }}
        {{- if not (kindIs "invalid" $value) }}
        - --{{ $flag }}={{ $value }}
        {{- end }}
        {{- end }}
      env:
        {{- if eq .Values.mode "imds" }}
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        {{- end }}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        {{- with include "sih.webhookSecret" . }}
        {{- if or $.Values.webhook.secretName $.Values.webhook.url }}
        - name: WEBHOOK_URL
          valueFrom:
            secretKeyRef: {name: {{ . }}, key: {{ $.Values.webhook.secretKey }}}
        {{- end }}
        {{- if or $.Values.webhook.secretName $.Values.webhook.headers }}
        - name: WEBHOOK_HEADERS
          valueFrom:
            secretKeyRef: {name: {{ . }}, key: {{ $.Values.webhook.headersSecretKey }}, optional: true}
        {{- end }}
        {{- if or $.Values.webhook.secretName $.Values.webhook.proxy }}
        - name: WEBHOOK_PROXY
          valueFrom:
            secretKeyRef: {name: {{ . }}, key: {{ $.Values.webhook.proxySecretKey }}, optional: true}
        {{- end }}
        {{- end }}
      ports:
        - {name: admin, containerPort: {{ .Values.adminPort }}}
      livenessProbe:
        httpGet: {path: /healthz, port: admin}
        initialDelaySeconds: 5
        periodSeconds: 10
      readinessProbe:
        httpGet: {path: /readyz, port: admin}
        periodSeconds: 5
      resources:
        {{- if eq .Values.mode "queue" }}
        {{- toYaml .Values.queue.resources | nindent 8 }}
        {{- else }}
        {{- toYaml .Values.resources | nindent 8 }}
        {{- end }}
      securityContext:
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
      {{- if include "sih.templateConfigMap" . }}
      volumeMounts:
        - {name: webhook-template, mountPath: /etc/spot-interrupt-handler/webhook, readOnly: true}
      {{- end }}
  {{- with include "sih.templateConfigMap" . }}
  volumes:
    - name: webhook-template
      configMap: {name: {{ . }}}
  {{- end }}
{{- end -}}
