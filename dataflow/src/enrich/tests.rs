use super::*;
use crate::decode::decode;

const NOW: i64 = 1_795_132_800_000;

fn enricher(toml_text: &str) -> Arc<Enricher> {
    let config: EnrichConfig = toml::from_str(toml_text).unwrap();
    Enricher::from_config(&config).unwrap().unwrap()
}

fn enrich(e: &Enricher, json: &str) -> Result<(String, Vec<(String, String)>), String> {
    let d = decode(json.as_bytes(), NOW).unwrap();
    let d = e.apply(d, &mut AgentCache::default()).map_err(|r| r.detail)?;
    let texts: Vec<(u64, &str)> = d.texts().collect();
    assert!(texts.iter().all(|(s, t)| *s == sym(t)), "symbols follow the texts");
    let fields = format!(
        "{} {} {} {} {}",
        d.name,
        d.page.as_deref().unwrap_or("-"),
        d.utm_source.as_deref().unwrap_or("-"),
        d.device.as_deref().unwrap_or("-"),
        d.country.as_deref().unwrap_or("-")
    );
    let props = d.prop_texts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Ok((fields, props))
}

#[test]
fn sources_agents_and_places_fill_the_fields_the_views_break_down_by() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("geo.csv");
    std::fs::write(&table, "198.51.100.0/24,DE,Berlin\n").unwrap();
    let e = enricher(&format!(
        "traffic_source = true\nuser_agent = true\ninternal_hosts = [\"shop.example.com\"]\nip_table = {:?}\n",
        table
    ));
    let (fields, props) = enrich(
        &e,
        r#"{"user_id":"u1","event":"page_view","ts":1795132800000,"page":"/","referrer":"https://www.google.com/search?q=shoes",
            "utm_campaign":" Spring Sale ","ip":"198.51.100.9",
            "user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"}"#,
    )
    .unwrap();
    assert_eq!(fields, "page_view / google desktop DE");
    let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("channel"), Some("search"));
    assert_eq!(get("campaign"), Some("spring_sale"));
    assert_eq!(get("browser"), Some("Chrome"));
    assert_eq!(get("bot"), Some("false"));
    assert_eq!(get("region"), Some("Berlin"));
    // Fields the event brings win over lookups.
    let (fields, _) = enrich(
        &e,
        r#"{"user_id":"u1","event":"click","ts":1795132800000,"ip":"198.51.100.9","country":"AT","device":"tv"}"#,
    )
    .unwrap();
    assert_eq!(fields, "click - direct tv AT");
    // A sender's own `bot` prop does not survive next to ours.
    let (_, props) = enrich(
        &e,
        r#"{"user_id":"u1","event":"click","ts":1795132800000,"props":{"bot":"false","plan":"pro"},
        "user_agent":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}"#,
    )
    .unwrap();
    let bots: Vec<&str> = props.iter().filter(|(k, _)| k == "bot").map(|(_, v)| v.as_str()).collect();
    assert_eq!(bots, vec!["true"]);
    assert!(props.iter().any(|(k, v)| k == "plan" && v == "pro"));
}

#[test]
fn filters_drop_with_the_rule_named_and_transforms_apply_in_order() {
    let e = enricher(
        r#"
user_agent = true
[[rules]]
name = "internal_traffic"
action = "drop"
when = { ip = ["10.0.0.0/8"] }
[[rules]]
name = "test_users"
action = "drop"
when = { user_id_prefix = "test-" }
[[rules]]
name = "crawlers"
action = "drop"
when = { bot = true }
[[rules]]
name = "signup_name"
action = "rename_event"
to = "signup"
when = { event = "signup_completed" }
[[rules]]
name = "product_pages"
action = "map_page"
pattern = "^/p/(\\d+)$"
replace = "/products/$1"
[[rules]]
name = "plan_campaign"
action = "copy_prop"
prop = "plan"
field = "utm_source"
when = { event = "signup" }
"#,
    );
    let ev = |extra: &str| format!(r#"{{"user_id":"u1","event":"page_view","ts":1795132800000{extra}}}"#);
    assert_eq!(enrich(&e, &ev(r#","ip":"10.2.3.4""#)).unwrap_err(), "dropped by enrich rule `internal_traffic`");
    assert_eq!(
        enrich(&e, r#"{"user_id":"test-7","event":"click","ts":1795132800000}"#).unwrap_err(),
        "dropped by enrich rule `test_users`"
    );
    let googlebot = r#","user_agent":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)""#;
    assert_eq!(enrich(&e, &ev(googlebot)).unwrap_err(), "dropped by enrich rule `crawlers`");
    assert_eq!(enrich(&e, &ev(r#","page":"/p/42""#)).unwrap().0, "page_view /products/42 - - -");
    assert_eq!(enrich(&e, &ev(r#","page":"/p/x""#)).unwrap().0, "page_view /p/x - - -");
    // The rename happens first, so the copy (conditioned on the new name) applies.
    let signup = r#"{"user_id":"u1","event":"signup_completed","ts":1795132800000,"props":{"plan":"pro"}}"#;
    assert_eq!(enrich(&e, signup).unwrap().0, "signup - pro - -");
}

#[test]
fn bad_rules_are_refused_with_their_name() {
    let config: EnrichConfig =
        toml::from_str("[[rules]]\nname = \"x\"\naction = \"map_page\"\npattern = \"(\"\nreplace = \"y\"\n").unwrap();
    let err = Enricher::from_config(&config).err().unwrap();
    assert!(err.contains("`x`") && err.contains("regex"), "{err}");
    let config: EnrichConfig = toml::from_str("[[rules]]\nname = \"x\"\naction = \"rename_event\"\n").unwrap();
    assert!(Enricher::from_config(&config).err().unwrap().contains("needs `to`"));
    assert!(toml::from_str::<EnrichConfig>("[[rules]]\nname = \"x\"\naction = \"explode\"\n").is_err());
    assert!(Enricher::from_config(&EnrichConfig::default()).unwrap().is_none(), "off unless configured");
}

#[test]
fn the_ip_table_reloads_when_its_file_changes_and_a_broken_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.csv");
    std::fs::write(&path, "192.0.2.0/24,DE\n").unwrap();
    let e = enricher(&format!("ip_table = {path:?}\n"));
    let geo = e.geo().unwrap();
    assert_eq!(geo.current().lookup("192.0.2.1").unwrap().country.as_ref(), "DE");
    assert!(!geo.reload_if_changed().unwrap(), "unchanged");
    std::fs::write(&path, "192.0.2.0/24,FR\n192.0.3.0/24,ES\n").unwrap();
    assert!(!geo.reload_if_changed().unwrap(), "a change is taken once it has held for a period");
    assert!(geo.reload_if_changed().unwrap());
    assert_eq!(geo.current().lookup("192.0.2.1").unwrap().country.as_ref(), "FR");
    std::fs::write(&path, "192.0.2.0/24\n").unwrap();
    assert!(!geo.reload_if_changed().unwrap());
    assert!(geo.reload_if_changed().unwrap_err().contains("line 1"));
    std::fs::write(&path, "").unwrap();
    assert!(!geo.reload_if_changed().unwrap());
    assert!(geo.reload_if_changed().unwrap_err().contains("no entries"), "a truncated file is not a table");
    assert_eq!(geo.current().lookup("192.0.3.1").unwrap().country.as_ref(), "ES", "the old table stays");
}
