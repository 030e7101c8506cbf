//! The real Kubernetes control plane as a test backend (included with `#[path]`): etcd,
//! kube-apiserver (TLS, Node+RBAC, bound service-account tokens), kube-controller-manager,
//! kube-scheduler and kwok playing the kubelets, on loopback, from `scripts/control-plane`
//! (built once from the Go module proxy and cached outside the clone).
//!
//! Each test gets a new control plane (etcd wiped): the same isolation the simulator gives
//! each test, at about five seconds a start. Running ones take numbered slots, each its own
//! fixed ports below the ephemeral range (which another process can take mid-run) and its own
//! directory, so tests run side by side and one test may hold two.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
const SLOT_COUNT: usize = 8;

/// A slot: slot `n` has the ports `26400 + 10 n ..` and the directory `control-plane-n`. Held
/// by a lock on `control-plane-n.lock` (released when dropped, or when the process ends,
/// however it ends), so test processes running side by side never share one.
struct Slot(usize, #[allow(dead_code)] std::fs::File);

impl Slot {
    async fn take() -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).unwrap();
        loop {
            for n in 0..SLOT_COUNT {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("control-plane-{n}.lock")))
                    .unwrap();
                if file.try_lock().is_ok() {
                    return Self(n, file);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Which cluster a test body runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `simulate cluster`: ours, with faults on demand and request journals.
    Simulator,
    /// kube-apiserver, etcd, the controllers and kwok.
    Real,
}

tokio::task_local! {
    /// Set by `on_both_backends!` for the test body it runs.
    static BACKEND: Backend;
}

/// The backend the running test asked for (the simulator unless it said otherwise).
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Simulator)
}

/// Runs `body` with `backend` as the test's backend.
pub async fn on<F: std::future::Future>(backend: Backend, body: F) -> F::Output {
    BACKEND.scope(backend, body).await
}

/// Runs each named test body (an `async fn` of no arguments) twice: against the simulator
/// and against the real control plane, as the tests `<name>::simulator` and
/// `<name>::real_control_plane`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn simulator() {
                $crate::real_cluster::on($crate::real_cluster::Backend::Simulator, super::$name()).await
            }
            #[tokio::test]
            async fn real_control_plane() {
                $crate::real_cluster::on($crate::real_cluster::Backend::Real, super::$name()).await
            }
        }
    )*};
}

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A running control plane; stopped when dropped.
pub struct ControlPlane {
    pub dir: PathBuf,
    /// The admin's (system:masters).
    pub kubeconfig: PathBuf,
    pub server: String,
    pub client: kube::Client,
    // Declared last: given back only after `drop` stopped the processes.
    _slot: Slot,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        off_the_workers(|| {
            std::process::Command::new(format!("{REPO}/scripts/control-plane"))
                .args(["down", self.dir.to_str().unwrap_or_default()])
                .output()
        })
        .ok();
    }
}

/// Runs a blocking call (a `kubectl`, stopping a control plane) without holding one of the
/// runtime's workers when the runtime has several: the soak runs eight clusters in one
/// runtime on two cores, and a `kubectl` blocking both workers for a second froze every other
/// scenario's proxy and recorders with it — fences and drains of unrelated scenarios looked
/// seconds late (CI, stop 41: `fence-late` and `left-at-hard-deadline` on the real control
/// plane). A current-thread runtime (most tests) has no other worker to hand over to.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

impl ControlPlane {
    /// Starts a new cluster in a free slot.
    pub async fn start() -> Self {
        let slot = Slot::take().await;
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("control-plane-{}", slot.0));
        std::fs::create_dir_all(&dir).unwrap();
        let out = tokio::process::Command::new(format!("{REPO}/scripts/control-plane"))
            .args(["up", dir.to_str().unwrap()])
            .env("SIH_CP_PORT_BASE", (26400 + 10 * slot.0).to_string())
            // The keys are made once for every cluster of this target directory.
            .env(
                "SIH_CP_PKI",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("control-plane-pki"),
            )
            .output()
            .await
            .expect("scripts/control-plane runs");
        assert!(
            out.status.success(),
            "the real control plane did not start (./scripts/test builds it; see scripts/control-plane):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = dir.join("admin.kubeconfig");
        let client = client_for(&kubeconfig).await;
        let server = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap()
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
        let cp = Self {
            dir,
            kubeconfig,
            server,
            client,
            _slot: slot,
        };
        // The controllers make each namespace's `default` ServiceAccount, which every pod
        // needs before the ServiceAccount admission plugin lets it in.
        cp.until(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || cp.kubectl_ok(&["get", "serviceaccount", "default", "-n", "default"]),
        )
        .await;
        cp
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        off_the_workers(|| {
            std::process::Command::new(kubectl_bin())
                .args(args)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HOME", &self.dir)
                .env("KUBECACHEDIR", self.dir.join("kubectl-cache"))
                .output()
        })
        .expect("kubectl is installed (./scripts/test installs it)")
    }

    fn kubectl_ok(&self, args: &[&str]) -> bool {
        self.kubectl(args).status.success()
    }

    /// `kubectl`, failing the test when it fails; its stdout.
    pub fn kubectl_must(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f` of a file or of YAML text.
    pub fn apply(&self, yaml: &str) {
        let file = self.dir.join(format!("apply-{}.yaml", fastrand::u64(..)));
        std::fs::write(&file, yaml).unwrap();
        self.kubectl_must(&["apply", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(file);
    }

    async fn until<F: FnMut() -> bool>(&self, what: &str, within: Duration, mut ok: F) {
        let end = tokio::time::Instant::now() + within;
        while !ok() {
            assert!(
                tokio::time::Instant::now() < end,
                "the real control plane: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates Node objects (as the simulator's `workload::node` writes them) that kwok runs
    /// as kubelets would, and waits until each is Ready and untainted by the node lifecycle
    /// controller.
    pub async fn add_nodes(&self, nodes: &[Value]) {
        let api: Api<Node> = Api::all(self.client.clone());
        for n in nodes {
            let mut n = n.clone();
            n["metadata"]["annotations"]["kwok.x-k8s.io/node"] = json!("fake");
            api.create(&PostParams::default(), &serde_json::from_value(n).unwrap())
                .await
                .unwrap();
        }
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut ready = 0;
            for name in &names {
                let node = api.get(name).await.unwrap();
                let is_ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let untainted = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| !t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
                if is_ready && untainted {
                    ready += 1;
                }
            }
            if ready == names.len() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "kwok never made the nodes Ready: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kubeconfig holding a token of `namespace/service_account`, written into `dir` as
    /// `kubeconfig`, bound as `bound` says: to the account's pod on a node (the DaemonSet's,
    /// which a drain leaves alone), so that it names the node as a DaemonSet pod's projected
    /// token does; to any pod of the account (a Deployment's); or to nothing.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        service_account: &str,
        bound: Bound<'_>,
        dir: &Path,
    ) -> PathBuf {
        let token = self
            .service_account_token(namespace, service_account, bound)
            .await;
        std::fs::create_dir_all(dir).unwrap();
        let ca = self.kubectl_must(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let file = dir.join("kubeconfig");
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority-data: {ca}}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                self.server,
            ),
        )
        .unwrap();
        file
    }

    /// A token of `namespace/service_account` (two hours), bound as `bound` says.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        bound: Bound<'_>,
    ) -> String {
        let mut args = vec![
            "create".to_owned(),
            "token".to_owned(),
            service_account.to_owned(),
            "-n".to_owned(),
            namespace.to_owned(),
            "--duration".to_owned(),
            "2h".to_owned(),
        ];
        if bound != Bound::Nothing {
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(self.client.clone(), namespace);
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            let on = match bound {
                Bound::PodOn(node) => format!("spec.nodeName={node}"),
                _ => String::new(),
            };
            let pod = loop {
                let list = pods
                    .list(&kube::api::ListParams::default().fields(&on))
                    .await
                    .unwrap();
                let found = list.items.into_iter().find(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.as_deref())
                        == Some(service_account)
                        && p.metadata.deletion_timestamp.is_none()
                });
                if let Some(p) = found {
                    break p.metadata.name.unwrap();
                }
                assert!(
                    tokio::time::Instant::now() < end,
                    "no pod of {namespace}/{service_account} ({bound:?}): is its workload applied?"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            args.extend([
                "--bound-object-kind".into(),
                "Pod".into(),
                "--bound-object-name".into(),
                pod,
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl_must(&args).trim().to_owned()
    }
}

/// What a test token is bound to.
#[allow(dead_code)] // each test binary uses some of them
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound<'a> {
    /// The account's pod on this node: the token names the node.
    PodOn(&'a str),
    /// Any pod of the account.
    AnyPod,
    Nothing,
}

/// A kube client for a kubeconfig file, without retries (a test sees every answer).
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}
