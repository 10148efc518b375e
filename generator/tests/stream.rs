//! The generated stream: deterministic per seed, in delivery order, at about the asked rate,
//! with its daily cycle.

use generator::{Generator, GeneratorConfig};

#[test]
fn same_seed_same_stream_in_delivery_order() {
    let start = 1_780_000_000_000;
    let a: Vec<_> = Generator::new(GeneratorConfig::default(), start).take(5000).collect();
    let b: Vec<_> = Generator::new(GeneratorConfig::default(), start).take(5000).collect();
    assert_eq!(a, b);
    assert!(a.windows(2).all(|w| w[0].deliver_ms <= w[1].deliver_ms));
}

#[test]
fn rate_is_about_what_was_asked() {
    let start = 1_780_000_000_000;
    let config = GeneratorConfig { rate: 1000.0, ..GeneratorConfig::default() };
    let events: Vec<_> = Generator::new(config, start).take(60_000).collect();
    let span_s = (events.last().unwrap().deliver_ms - start) as f64 / 1000.0;
    let rate = 60_000.0 / span_s;
    assert!((500.0..2000.0).contains(&rate), "rate {rate}");
}

#[test]
fn daily_cycle_peaks_in_the_afternoon() {
    // Without lateness every record is delivered at its event time.
    let config = GeneratorConfig {
        rate: 20.0,
        daily_amplitude: 0.5,
        late_share: 0.0,
        too_late_share: 0.0,
        duplicate_share: 0.0,
        ..GeneratorConfig::default()
    };
    let midnight = 1_795_132_800_000;
    let hour_from = |minutes: i64| {
        let start = midnight + minutes * 60_000;
        Generator::new(config.clone(), start).take_while(|g| g.deliver_ms < start + 3_600_000).count()
    };
    let (night, afternoon) = (hour_from(150), hour_from(870));
    assert!(afternoon >= 2 * night, "02:30-03:30 {night}, 14:30-15:30 {afternoon}");
}

#[test]
fn bots_burst_in_their_own_ten_minutes_of_each_hour_and_rest_the_rest() {
    let config = GeneratorConfig {
        rate: 3.0,
        bot_share: 0.2,
        late_share: 0.0,
        too_late_share: 0.0,
        duplicate_share: 0.0,
        malformed_share: 0.0,
        ..GeneratorConfig::default()
    };
    let start = 1_795_132_800_000;
    let mut sessions = std::collections::BTreeSet::new();
    let mut bots = std::collections::BTreeSet::new();
    for g in Generator::new(config, start).take_while(|g| g.deliver_ms < start + 3 * 3_600_000) {
        let v: serde_json::Value = serde_json::from_slice(&g.line).unwrap();
        let Some(n) = v["user_id"].as_str().unwrap().strip_prefix("bot-") else { continue };
        let n: u32 = n.parse().unwrap();
        let ts = v["ts"].as_i64().unwrap();
        // Minutes into its hour-long cycle: a session starts in the first 10 (its first view comes
        // a moment later) and its burst of at most 2,000 views about 150 ms apart is over well
        // before minute 20.
        let phase = (ts.div_euclid(60_000) + 7 * n as i64).rem_euclid(60);
        // (Sessions started before `start` show only their later views: the warm-up's are not built.)
        if sessions.insert(v["session_id"].as_str().unwrap().to_string()) && ts >= start + 20 * 60_000 {
            assert!(phase <= 10, "bot-{n} started at minute {phase} of its cycle");
        }
        assert!(phase < 20, "bot-{n} still busy at minute {phase} of its cycle");
        bots.insert(n);
    }
    assert!(bots.len() > 25, "most bots burst at some time: {}", bots.len());
}
