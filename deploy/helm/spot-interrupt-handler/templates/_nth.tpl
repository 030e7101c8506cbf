{{/* aws-node-termination-handler's value names, each with ours. Given to this chart they would
be dropped without a word (the pod would run without what they asked for), so a render that
carries any of them fails with the replacement. The README's table says the same at length;
values.schema.json lets these names through to this check (tests keep the three in step). */}}
{{- define "sih.nthValues" -}}
enableSqsTerminationDraining: "mode: queue"
queueURL: "queue.url"
awsRegion: "queue.region"
awsEndpoint: "queue.endpoint"
workers: "queue.workers"
enableSpotInterruptionDraining: "flags.spot-interruption-action: drain (or none)"
enableScheduledEventDraining: "flags.scheduled-maintenance-action: drain (or none)"
enableRebalanceMonitoring: "flags.rebalance-action: cordon (default here: taint)"
enableRebalanceDraining: "flags.rebalance-action: drain"
enableASGLifecycleDraining: "flags.asg-termination-action: drain"
cordonOnly: "flags.cordon-only: true"
taintNode: "nothing: the node is always tainted (flags.taint-effect for the effect)"
taintEffect: "flags.taint-effect"
excludeFromLoadBalancers: "nothing: the node is always labelled out of load balancers"
enableOutOfServiceTaint: "flags.out-of-service-taint: true"
dryRun: "flags.dry-run: true"
podTerminationGracePeriod: "flags.pod-termination-grace-period"
nodeTerminationGracePeriod: "flags.drain-budget (a duration, e.g. 120s; used when a notice has no deadline)"
ignoreDaemonSets: "nothing: DaemonSet pods always stay"
deleteLocalData: "nothing: pods with emptyDir always go (with a warning Event)"
webhookURL: "webhook.url (kept in a Secret)"
webhookURLSecretName: "webhook.secretName (and webhook.secretKey)"
webhookHeaders: "webhook.headers (kept in a Secret)"
webhookProxy: "webhook.proxy (kept in a Secret)"
webhookTemplate: "webhook.template"
webhookTemplateConfigMapName: "webhook.templateConfigMap"
webhookTemplateConfigMapKey: "webhook.templateConfigMapKey"
emitKubernetesEvents: "flags.kubernetes-events (on by default here)"
kubernetesEventsExtraAnnotations: "flags.events-extra-annotations"
enablePrometheusServer: "nothing: /metrics is always served on adminPort"
prometheusServerPort: "adminPort"
enableProbesServer: "nothing: /healthz is always served on adminPort (flags.probes-listen for a second port)"
probesServerPort: "flags.probes-listen (e.g. 0.0.0.0:8080)"
probesServerEndpoint: "flags.probes-path"
jsonLogging: "flags.log-format: json (the default here)"
logFormatVersion: "flags.log-format"
logLevel: "flags.log-level"
metadataTries: "imds.flags.imds-attempts"
instanceMetadataURL: "imds.flags.imds-endpoint"
useHostNetwork: "hostNetwork"
heartbeatInterval: "queue.flags.heartbeat-interval (a duration, e.g. 30s)"
heartbeatUntil: "queue.flags.heartbeat-until (a duration)"
completeLifecycleActionDelaySeconds: "queue.flags.complete-lifecycle-action-delay (a duration)"
sqsMsgVisibilityTimeoutSec: "queue.flags.visibility-timeout (a duration, e.g. 20s)"
useProviderId: "queue.flags.use-provider-id: true"
deleteSqsMsgIfNodeNotFound: "queue.flags.delete-if-node-not-found (true by default here)"
checkTagBeforeDraining: "queue.flags.managed-tag (off unless set here)"
managedTag: "queue.flags.managed-tag"
daemonsetNodeSelector: "nodeSelector"
daemonsetAffinity: "affinity"
daemonsetTolerations: "tolerations"
daemonsetPriorityClassName: "priorityClassName"
linuxNodeSelector: "nothing: kubernetes.io/os: linux is always selected (add more under nodeSelector)"
windowsNodeSelector: "nothing: Linux nodes only"
targetNodeOs: "nothing: Linux nodes only"
customLabels: "podLabels"
podSecurityContext: "nothing: the pod always runs as a non-root user"
securityContext: "nothing: the container is always read-only, without privileges or capabilities"
terminationGracePeriodSeconds: "nothing: the pod's default grace is enough for the agent to stop"
extraEnv: "flags, imds.flags or queue.flags, by the flag's long name"
probes: "nothing: the probes are /healthz and /readyz on adminPort"
topologySpreadConstraints: "queue.placement.apart"
strategy: "updateStrategy (imds)"
kubernetesServiceHost: "nothing: the in-cluster service account's address is used"
kubernetesServicePort: "nothing: the in-cluster service account's address is used"
{{- end -}}

{{- define "sih.checkNth" -}}
{{- $found := list -}}
{{- range $name, $ours := include "sih.nthValues" . | fromYaml -}}
{{- if hasKey $.Values $name -}}
{{- $found = append $found (printf "%s -> %s" $name $ours) -}}
{{- end -}}
{{- end -}}
{{- if $found -}}
{{- fail (printf "these are aws-node-termination-handler's values, not this chart's (the chart's README has the whole table): %s" (join "; " $found)) -}}
{{- end -}}
{{- end -}}
