//! Watches of pods, and pods' logs (followed or read in one piece).

use super::*;

// ---------------------------------------------------------------------------------------------
// Watches and logs
// ---------------------------------------------------------------------------------------------

pub(super) fn watch_pods(
    shared: &Shared,
    index: usize,
    w: &mut TcpStream,
    route: &Route,
    selector: &str,
    rv: Option<&str>,
) -> io::Result<()> {
    shared.set_status(index, 200);
    start_chunked(w, "application/json")?;
    let matches = |object: &Value| {
        (route.namespace.is_empty() || object["metadata"]["namespace"] == route.namespace.as_str())
            && selects(selector, object)
    };
    let mut budget = {
        let mut state = shared.lock();
        state.watches += 1;
        shared.scenario.watch_breaks_after.filter(|_| state.watches == 1)
    };
    let mut send = |w: &mut TcpStream, line: &[u8]| {
        if budget == Some(0) {
            return Err(io::Error::other("the scenario cuts this watch"));
        }
        budget = budget.map(|b| b - 1);
        write_chunk(w, line)
    };
    let mut cursor = rv.and_then(|rv| rv.parse::<u64>().ok()).unwrap_or(0);
    if cursor == 0 {
        // No resource version: the current state first, as ADDED.
        let (initial, now): (Vec<Value>, u64) = {
            let state = shared.lock();
            (
                state
                    .objects
                    .iter()
                    .filter(|((plural, _, _), o)| plural == "pods" && matches(o))
                    .map(|(_, o)| o.clone())
                    .collect(),
                state.rv,
            )
        };
        for object in initial {
            send(w, &watch_line("ADDED", &object))?;
        }
        cursor = now;
    }
    loop {
        let batch: Vec<(u64, Vec<u8>)> = {
            let mut state = shared.lock();
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return Err(io::Error::other("shut down"));
                }
                // Events are in resource-version order: start after the cursor, not at the
                // first event (a thousand-node run has thousands, and every log line wakes us).
                let after = state.events.partition_point(|e| e.rv <= cursor);
                let batch: Vec<(u64, Vec<u8>)> = state.events[after..]
                    .iter()
                    .filter(|e| matches(&e.object))
                    .map(|e| (e.rv, watch_line(e.kind, &e.object)))
                    .collect();
                if !batch.is_empty() {
                    break batch;
                }
                // Nothing new: skip past what did not match.
                cursor = cursor.max(state.events.last().map_or(0, |e| e.rv));
                state = shared.changed.wait_timeout(state, Duration::from_millis(100)).expect("lock").0;
            }
        };
        for (rv, line) in batch {
            send(w, &line)?;
            cursor = rv;
        }
    }
}

pub(super) fn watch_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    line
}

pub(super) fn pod_log(
    shared: &Shared,
    index: usize,
    w: &mut TcpStream,
    route: &Route,
    follow: bool,
    tail: Option<usize>,
) -> io::Result<()> {
    let name = route.name.clone().unwrap_or_default();
    let key = (route.namespace.clone(), name.clone());
    let mut sent = 0;
    {
        let state = shared.lock();
        let Some(pod) = state.objects.get(&("pods".to_owned(), key.0.clone(), key.1.clone())) else {
            drop(state);
            return respond(shared, index, w, 404, &not_found(&KINDS[0], &name));
        };
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
        if state.dead_kubelets.contains(&node) {
            drop(state);
            let message = format!("Get \"https://10.0.0.2:10250/containerLogs/{}/{name}/eagle-agent\": dial tcp 10.0.0.2:10250: connect: connection refused", key.0);
            return respond(shared, index, w, 500, &status(500, "InternalError", message, json!({})));
        }
        let Some(log) = state.logs.get(&key) else {
            let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .unwrap_or("ContainerCreating")
                .to_owned();
            let container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default().to_owned();
            drop(state);
            let message = format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}");
            return respond(shared, index, w, 400, &status(400, "BadRequest", message, json!({})));
        };
        if !follow {
            let skip = tail.map_or(0, |t| log.lines.len().saturating_sub(t));
            let text: String = log.lines.iter().skip(skip).map(|l| format!("{l}\n")).collect();
            drop(state);
            shared.set_status(index, 200);
            return write_body(w, 200, "text/plain", text.as_bytes());
        }
    }
    let mut budget = {
        let mut state = shared.lock();
        let first = state.followed.insert(key.clone());
        shared.scenario.follow_breaks_after.filter(|_| first)
    };
    shared.set_status(index, 200);
    start_chunked(w, "text/plain")?;
    loop {
        let (lines, ended) = {
            let mut state = shared.lock();
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return Err(io::Error::other("shut down"));
                }
                let node_of_pod = state
                    .objects
                    .get(&("pods".to_owned(), key.0.clone(), key.1.clone()))
                    .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_owned));
                if node_of_pod.is_some_and(|n| state.dead_kubelets.contains(&n)) {
                    // The API server's connection to the kubelet is gone: the stream breaks.
                    return Err(io::Error::other("the kubelet stopped"));
                }
                match state.logs.get(&key) {
                    None => break (Vec::new(), true),
                    Some(log) if log.lines.len() > sent || log.ended => break (log.lines[sent..].to_vec(), log.ended),
                    Some(_) => state = shared.changed.wait_timeout(state, Duration::from_millis(100)).expect("lock").0,
                }
            }
        };
        match budget.as_mut() {
            None => {
                // What came since the last write, in one chunk, as a server's buffered copy
                // sends it.
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                write_chunk(w, text.as_bytes())?;
                sent += lines.len();
            }
            Some(budget) => {
                for line in lines {
                    if *budget == 0 {
                        return Err(io::Error::other("the scenario cuts this follow"));
                    }
                    *budget -= 1;
                    write_chunk(w, format!("{line}\n").as_bytes())?;
                    sent += 1;
                }
            }
        }
        if ended {
            return end_chunked(w);
        }
    }
}
