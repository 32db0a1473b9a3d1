//! The network record in the stream: it travels with the CPU payload, the trailer counts it,
//! and the decoder treats it as hostile input.

use eagle_proto::net::{FOLDED_PEERS, NET_VERSION};
use eagle_proto::{
    DecodeError, Decoder, Direction, Encoder, Header, HttpRoute, LatencyHistogram, Limits, NetLimits, NetPayload,
    NodeResult, PeerTraffic, StackRecord,
};

fn header_line() -> String {
    Encoder.header(&Header { node: "n1".into(), ..Header::default() })
}

fn stack() -> StackRecord {
    StackRecord {
        pid: 7,
        process: "srv".into(),
        sampler: "ebpf".into(),
        frames: vec!["main".into()],
        count: 3,
        ..StackRecord::default()
    }
}

fn net() -> NetPayload {
    let mut latency = LatencyHistogram::default();
    for us in [900, 1000, 1100, 250_000] {
        latency.record(us);
    }
    NetPayload {
        peers: vec![PeerTraffic {
            container: Some("abc".into()),
            pid: 7,
            process: "srv".into(),
            direction: Direction::Inbound,
            local_port: 8080,
            peer: "127.0.0.1".into(),
            bytes_sent: 1234,
            bytes_received: 567,
            accepts: 3,
            rtt_sum_us: 90,
            rtt_samples: 3,
            ..PeerTraffic::default()
        }],
        http: vec![HttpRoute {
            container: Some("abc".into()),
            pid: 7,
            process: "srv".into(),
            direction: Direction::Inbound,
            peer: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/api/items/{id}".into(),
            status: 200,
            requests: 4,
            latency_us: latency,
        }],
        ..NetPayload::new(5000)
    }
}

fn decode(lines: &[String], limits: Limits) -> Result<NodeResult, DecodeError> {
    let mut decoder = Decoder::with_limits(limits);
    for line in lines {
        if decoder.feed_line(line).is_err() {
            break;
        }
    }
    decoder.finish()
}

fn stream(net: &NetPayload) -> Vec<String> {
    let mut lines = vec![header_line()];
    lines.extend(Encoder.payload_with_net(&[stack()], 0, net));
    lines
}

#[test]
fn the_network_record_travels_beside_the_stacks() {
    let result = decode(&stream(&net()), Limits::DEFAULT).unwrap();
    assert_eq!(result.net, Some(net()));
    assert_eq!(result.trailer.net, 1);
    assert_eq!(result.samples(), 3);
}

#[test]
fn a_stream_without_one_reads_as_before_and_says_nothing_of_it() {
    let mut lines = vec![header_line()];
    lines.extend(Encoder.payload(&[stack()], 0));
    assert!(!lines.last().unwrap().contains("net"));
    assert_eq!(decode(&lines, Limits::DEFAULT).unwrap().net, None);
}

#[test]
fn a_lost_network_record_is_a_mismatch_not_an_empty_one() {
    let lines: Vec<String> = stream(&net()).into_iter().filter(|l| !l.starts_with("EAGLE1 N ")).collect();
    assert_eq!(
        decode(&lines, Limits::DEFAULT).unwrap_err(),
        DecodeError::Mismatch { what: "network records", expected: 1, found: 0 }
    );
}

#[test]
fn a_second_record_a_late_one_and_a_forged_one_are_refused() {
    let mut lines = stream(&net());
    let record = lines.iter().find(|l| l.starts_with("EAGLE1 N ")).unwrap().clone();
    lines.insert(1, record.clone());
    assert!(
        matches!(decode(&lines, Limits::DEFAULT), Err(DecodeError::Malformed { kind: 'N', reason, .. }) if reason.contains("second"))
    );

    let mut late = stream(&net());
    late.push(record.clone());
    assert!(matches!(decode(&late, Limits::DEFAULT), Err(DecodeError::AfterTrailer { .. })));

    let mut forged = stream(&net());
    let at = forged.iter().position(|l| l.starts_with("EAGLE1 N ")).unwrap();
    forged[at] = record.replace("[[", "[[4000,1],[");
    assert!(
        matches!(decode(&forged, Limits::DEFAULT), Err(DecodeError::Malformed { kind: 'N', reason, .. }) if reason.contains("bucket"))
    );
    forged[at] = record.replace(&format!("\"version\":{NET_VERSION}"), "\"version\":99");
    assert!(
        matches!(decode(&forged, Limits::DEFAULT), Err(DecodeError::Malformed { kind: 'N', reason, .. }) if reason.contains("version 99"))
    );
    forged[at] = "EAGLE1 N {\"version\":1,\"window_ms\":1,\"peers\":7}".into();
    assert!(matches!(decode(&forged, Limits::DEFAULT), Err(DecodeError::Malformed { kind: 'N', .. })));
}

#[test]
fn a_record_over_the_limits_is_refused_before_it_is_parsed() {
    let lines = stream(&net());
    let limits = Limits { net: NetLimits { record_bytes: 100, ..NetLimits::DEFAULT }, ..Limits::DEFAULT };
    assert!(matches!(decode(&lines, limits), Err(DecodeError::TooLarge { what: "the network record", .. })));
    let limits = Limits { net: NetLimits { peers: 0, ..NetLimits::DEFAULT }, ..Limits::DEFAULT };
    assert!(
        matches!(decode(&lines, limits), Err(DecodeError::Malformed { kind: 'N', reason, .. }) if reason.contains("peer rows"))
    );
}

#[test]
fn the_agent_folds_a_record_too_big_for_the_stream_and_says_so() {
    let mut big = NetPayload::new(1000);
    big.peers = (0..10_000u32)
        .map(|i| PeerTraffic {
            pid: 1,
            process: "p".into(),
            peer: format!("10.{}.{}.{}:443", i >> 16, (i >> 8) & 255, i & 255),
            bytes_sent: u64::from(i),
            ..PeerTraffic::default()
        })
        .collect();
    let lines = stream(&big);
    let result = decode(&lines, Limits::DEFAULT).unwrap();
    let net = result.net.unwrap();
    assert!(net.peers.len() <= NetLimits::DEFAULT.peers);
    assert!(net.peers.iter().any(|p| p.peer == FOLDED_PEERS));
    assert_eq!(net.peers.iter().map(|p| p.bytes_sent).sum::<u64>(), (0..10_000u64).sum::<u64>());
    assert!(result.warnings.iter().any(|w| w.message.contains("network record")));
}
