//! Java and Ruby on a real cluster: the ground truths of images/java and images/ruby in pods of
//! their own (scripts/lab/build-images.sh: `java-groundtruth`, a plain `java` with no profiling
//! flag; `ruby-groundtruth`), each run as user 65534 in its own PID and mount namespace, profiled
//! by the real CLI at 499 Hz and then at 99 Hz in the same pod's life. Each function must read
//! its true share (60/30/10 %) within the project's tolerance for the samples there are
//! ([`eagle_tests::tolerance`]), as the local tests (`runtimes.rs`) and the other cluster tests
//! (`cluster_e2e.rs`) do.
//!
//! `#[ignore]`d like every cluster test: `scripts/test.sh` runs them with `--run-ignored only`
//! against the lab, or against the cluster of `EAGLE_E2E_KUBECONFIG`. Images:
//! `EAGLE_E2E_JAVA_GROUNDTRUTH_IMAGE`, `EAGLE_E2E_RUBY_GROUNDTRUTH_IMAGE` (default
//! `lab.local/{java,ruby}-groundtruth:<version>`).

use std::time::Duration;

use eagle_proto::FoldedStacks;
use eagle_tests::cluster::{is_running, TestNamespace, POD_WAIT_S};
use serde_json::{json, Value};

fn image(runtime: &str) -> String {
    let var = format!("EAGLE_E2E_{}_GROUNDTRUTH_IMAGE", runtime.to_uppercase());
    std::env::var(var).unwrap_or_else(|_| format!("lab.local/{runtime}-groundtruth:{}", env!("CARGO_PKG_VERSION")))
}

/// A Deployment of one pod running `container` (its image, and `command` if given) as nobody,
/// as a service is run; waited for until it runs. Returns the pod's node.
fn deploy(ns: &TestNamespace, name: &str, container: Value) -> String {
    let mut container = container;
    container["name"] = json!("app");
    container["imagePullPolicy"] = json!("IfNotPresent");
    ns.create_deployment(
        name,
        1,
        json!({"securityContext": {"runAsUser": 65534, "runAsNonRoot": true}, "containers": [container]}),
    );
    ns.wait_for_pods(name, |pods| pods.into_iter().find(is_running)?.spec?.node_name)
        .unwrap_or_else(|why| panic!("deployment {name}: no pod Running after {POD_WAIT_S} s:{why}"))
}

/// One `profile` run at `hz` for `window`, its folded stacks and its stderr; exit 0 required.
fn profile(ns: &TestNamespace, target: &str, hz: &str, window: &str) -> (FoldedStacks, String) {
    let out_file = format!("{}-{hz}.folded", target.replace('/', "-"));
    let args = [target, "-d", window, "-f", hz, "-o", &out_file, "--group-by", "workload"];
    let out = ns.run("profile", &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "profile {args:?}: {stderr}");
    let folded = FoldedStacks::parse(&std::fs::read_to_string(ns.path(&out_file)).unwrap()).unwrap();
    if let Some((stack, count)) = folded.iter().max_by_key(|(_, c)| *c) {
        eprintln!("{out_file}: {} samples, the widest stack: {stack} {count}", folded.total());
    }
    (folded, stderr)
}

/// The stacks with a frame for which `matches` holds.
fn having(folded: &FoldedStacks, matches: impl Fn(&str) -> bool) -> FoldedStacks {
    let mut part = FoldedStacks::new();
    for (stack, count) in folded.iter().filter(|(s, _)| s.split(';').any(&matches)) {
        part.add_joined(stack.to_owned(), count);
    }
    part
}

/// Inclusive share, in percent, of samples with a frame for which `matches` holds.
fn share(folded: &FoldedStacks, matches: impl Fn(&str) -> bool) -> f64 {
    having(folded, matches).total() as f64 * 100.0 / folded.total().max(1) as f64
}

/// How precise the agent says the shares of the processes it profiled on `node` are: the
/// lowest of the `info-precision` lines in that node's rows of the run's table (`NAME (PID): N
/// stacks read by SAMPLER, weighed by CPU time: shares as precise as N samples`: reads weighed
/// by CPU time are worth fewer samples when their weights differ), or of its busiest thread
/// where the line says that too. The graph, grouped by
/// workload, names no process; on a lab of one node this is the lower of both pods'.
fn reported_precision(stderr: &str, node: &str) -> Option<u64> {
    let mut in_node = false;
    stderr
        .lines()
        .filter_map(|l| {
            if !l.starts_with(' ') {
                in_node = l.split_whitespace().next() == Some(node);
                return None;
            }
            let precise = l.split_once("shares as precise as ")?.1;
            // Where the agent also says how precise the busiest thread's split is (Flight
            // Recorder), that is the figure: the known split is within that one thread, and
            // the whole JVM's figure counts the reads of the threads that started the recording
            // (see runtimes.rs).
            let precise = match precise.split_once("within its busiest thread, ") {
                Some((_, thread)) => thread.split_once("as precise as ")?.1,
                None => precise,
            };
            in_node.then(|| precise.split_whitespace().next()?.parse().ok())?
        })
        .min()
}

/// The 60/30/10 split among the stacks of the three functions `names`, within the project's
/// rule for the samples there are (or the precision the agent reported, when lower).
fn assert_split(what: &str, folded: &FoldedStacks, names: [&str; 3], precision: Option<u64>) {
    let code = having(folded, |f| names.iter().any(|n| f.starts_with(n)));
    assert!(code.total() >= 50, "{what}: {} samples in the known functions: too few to judge", code.total());
    let samples = precision.map_or(code.total(), |p| p.min(code.total()));
    for (name, expected) in names.iter().zip([60.0, 30.0, 10.0]) {
        let got = share(&code, |f| f.starts_with(name));
        let tolerance = eagle_tests::tolerance(0.03, expected / 100.0, samples) * 100.0;
        eprintln!(
            "{what}: {name} {got:.1}% of {} samples (as precise as {samples}), {expected}±{tolerance:.1}",
            code.total()
        );
        assert!(
            (got - expected).abs() <= tolerance,
            "{what}: {name}: {got:.1}% of {} samples (as precise as {samples}), expected {expected}±{tolerance:.1}",
            code.total()
        );
    }
}

/// A JVM started plainly (`java -cp /app GroundTruth`, images/java) in a pod: Flight Recorder
/// attached at run time through the pod's own `/tmp` and PID namespace, whole Java stacks
/// tagged `[java]`, weighed by each thread's CPU time, at 499 Hz and then 99 Hz.
#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn java_in_a_pod_started_plainly_shows_the_true_split_at_499_and_99_hz() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let ns = TestNamespace::new(kc, "java");
    let node = deploy(&ns, "jvm", json!({"image": image("java")}));
    // The split holds once the JIT has compiled the hot methods (runtimes.rs: 6 s locally).
    std::thread::sleep(Duration::from_secs(6));
    let target = "deployment/jvm";
    for (hz, window) in [("499", "6s"), ("99", "10s")] {
        let what = format!("java at {hz} Hz");
        let (folded, stderr) = profile(&ns, target, hz, window);
        assert!(stderr.contains(": java, sampled by jfr"), "{what}: Flight Recorder took the JVM: {stderr}");
        assert!(
            folded.iter().any(|(s, _)| s.contains(
                "GroundTruth.main(java.lang.String[]) [java]_[j];GroundTruth.cpu60(long) [java]_[j];GroundTruth.spin(long) [java]"
            )),
            "{what}: whole Java stacks, named and tagged [java]"
        );
        assert_split(
            &what,
            &folded,
            ["GroundTruth.cpu60(", "GroundTruth.cpu30(", "GroundTruth.cpu10("],
            reported_precision(&stderr, &node),
        );
        // Flight Recorder names threads by their ids in the pod's PID namespace: read as the
        // node's, the thread running main() would show twice, its Java stacks weighed by their
        // count and its CPU time again as a thread outside Java code.
        let main_outside = share(&folded, |f| f == "java (JVM thread outside Java code)");
        let tolerance = eagle_tests::tolerance(0.03, 0.0, folded.total()) * 100.0;
        assert!(
            main_outside <= tolerance,
            "{what}: the thread running main() is {main_outside:.1}% of {} samples as a thread outside Java code",
            folded.total()
        );
    }
}

/// Ruby in pods (images/ruby, Debian's ruby): the ground truth at 499 Hz and then 99 Hz, and
/// threads.rb in the same runs, whose `waiter` thread takes the interpreter lock every
/// millisecond and uses next to no CPU: each stack weighs its own thread's CPU time, which
/// needs the thread's id in the pod's PID namespace turned into the node's (weighed by the
/// process's clock instead, `idle_wait` reads 95 %).
#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn ruby_in_a_pod_shows_the_true_split_at_499_and_99_hz_and_threads_weigh_their_own_cpu() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let ns = TestNamespace::new(kc, "ruby");
    let node = deploy(&ns, "rb", json!({"image": image("ruby")}));
    deploy(&ns, "rbthreads", json!({"image": image("ruby"), "command": ["ruby", "/threads.rb"]}));
    let target = format!("namespace/{}", ns.namespace);
    for (hz, window) in [("499", "5s"), ("99", "10s")] {
        let what = format!("ruby at {hz} Hz");
        let (folded, stderr) = profile(&ns, &target, hz, window);
        assert!(stderr.contains(": ruby, sampled by rbspy"), "{what}: rbspy read the Ruby processes: {stderr}");
        let workload = |name: &str| having(&folded, |f| f == format!("deployment/{name}"));
        let rb = workload("rb");
        assert!(
            rb.iter().any(|(s, _)| s.contains("cpu_60 (groundtruth.rb) [rb]")),
            "{what}: Ruby frames named and tagged"
        );
        assert_split(&what, &rb, ["cpu_60 (", "cpu_30 (", "cpu_10 ("], reported_precision(&stderr, &node));
        let threads = workload("rbthreads");
        let idle = share(&threads, |f| f.starts_with("idle_wait ("));
        let compress = share(&threads, |f| f.starts_with("compress ("));
        // The waiter used 2.6 % of the process's CPU time locally (runtimes.rs): 3 % at most,
        // within the project's rule for the samples there are.
        let tolerance = 3.0 + eagle_tests::tolerance(0.03, 0.03, threads.total()) * 100.0;
        eprintln!("{what}: threads.rb: idle_wait {idle:.1}%, compress {compress:.1}% of {} samples", threads.total());
        assert!(threads.total() >= 50, "{what}: {} samples of threads.rb: too few to judge", threads.total());
        assert!(
            idle <= tolerance,
            "{what}: idle_wait {idle:.1}% of {} samples of threads.rb (compress {compress:.1}%): expected the waiter's few percent, at most {tolerance:.1}",
            threads.total()
        );
    }
}
