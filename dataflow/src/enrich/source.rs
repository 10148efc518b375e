//! Traffic source from the referrer and UTM fields: what GA4 calls the default channel group,
//! reduced to direct, search, social, email, paid, referral and internal.

/// `(utm_source to show, channel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub source: String,
    pub channel: &'static str,
}

const SEARCH: &[(&str, &str)] = &[
    ("google.", "google"),
    ("bing.com", "bing"),
    ("duckduckgo.com", "duckduckgo"),
    ("search.yahoo.", "yahoo"),
    ("yahoo.", "yahoo"),
    ("baidu.com", "baidu"),
    ("yandex.", "yandex"),
    ("ecosia.org", "ecosia"),
    ("search.brave.com", "brave"),
    ("naver.com", "naver"),
];

const SOCIAL: &[(&str, &str)] = &[
    ("facebook.com", "facebook"),
    ("fb.com", "facebook"),
    ("instagram.com", "instagram"),
    ("t.co", "twitter"),
    ("twitter.com", "twitter"),
    ("x.com", "twitter"),
    ("linkedin.com", "linkedin"),
    ("lnkd.in", "linkedin"),
    ("reddit.com", "reddit"),
    ("pinterest.", "pinterest"),
    ("youtube.com", "youtube"),
    ("tiktok.com", "tiktok"),
    ("news.ycombinator.com", "hackernews"),
];

const WEBMAIL: &[&str] = &["mail.google.com", "outlook.live.com", "outlook.office.com", "mail.yahoo.com"];

/// The host of a referrer URL, lower case, without `www.` (`None` for an empty or odd one).
pub fn host(referrer: &str) -> Option<String> {
    let rest = referrer.split_once("://").map_or(referrer, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?.split(':').next()?.trim();
    if host.is_empty() {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(host.strip_prefix("www.").map(str::to_string).unwrap_or(host))
}

/// `host` is `domain` or one of its subdomains; a `domain` ending in `.` matches any suffix
/// (`google.` is google.com, google.de, ...).
fn is(host: &str, domain: &str) -> bool {
    // A label boundary before `at` in `host` (the start, or a dot).
    let boundary = |at: usize| at == 0 || host.as_bytes()[at - 1] == b'.';
    if let Some(stem) = domain.strip_suffix('.') {
        return host == stem || host.match_indices(domain).any(|(at, _)| boundary(at));
    }
    host.len() >= domain.len() && host.ends_with(domain) && boundary(host.len() - domain.len())
}

fn channel_of_medium(medium: &str) -> Option<&'static str> {
    Some(match medium {
        "cpc" | "ppc" | "paid" | "paidsearch" | "paid_search" | "display" | "cpm" | "banner" | "paid_social"
        | "paidsocial" | "retargeting" => "paid",
        "email" | "e-mail" | "e_mail" | "newsletter" => "email",
        "social" | "social-network" | "social-media" | "sm" | "social_network" => "social",
        "organic" => "search",
        "referral" | "affiliate" | "partner" => "referral",
        _ => return None,
    })
}

pub fn normalise(text: &str) -> String {
    text.trim().to_lowercase().split_whitespace().collect::<Vec<_>>().join("_")
}

/// The source and channel of an event. UTM fields win over the referrer (they were put there on
/// purpose); a referrer from one of `internal_hosts` is internal navigation.
pub fn classify(
    referrer: Option<&str>,
    utm_source: Option<&str>,
    utm_medium: Option<&str>,
    internal_hosts: &[String],
) -> Source {
    let medium = utm_medium.map(normalise);
    let by_medium = medium.as_deref().and_then(channel_of_medium);
    if let Some(source) = utm_source.map(normalise).filter(|s| !s.is_empty()) {
        let channel = by_medium.unwrap_or_else(|| {
            if SEARCH.iter().any(|(_, name)| *name == source) {
                "search"
            } else if SOCIAL.iter().any(|(_, name)| *name == source) {
                "social"
            } else {
                "referral"
            }
        });
        return Source { source, channel };
    }
    let Some(host) = referrer.and_then(host) else {
        return Source { source: "direct".into(), channel: by_medium.unwrap_or("direct") };
    };
    if internal_hosts.iter().any(|h| is(&host, &h.to_ascii_lowercase())) {
        return Source { source: "internal".into(), channel: "internal" };
    }
    if WEBMAIL.iter().any(|d| is(&host, d)) {
        return Source { source: host, channel: by_medium.unwrap_or("email") };
    }
    if let Some((_, name)) = SEARCH.iter().find(|(d, _)| is(&host, d)) {
        return Source { source: name.to_string(), channel: by_medium.unwrap_or("search") };
    }
    if let Some((_, name)) = SOCIAL.iter().find(|(d, _)| is(&host, d)) {
        return Source { source: name.to_string(), channel: by_medium.unwrap_or("social") };
    }
    Source { source: host, channel: by_medium.unwrap_or("referral") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(referrer: Option<&str>, source: Option<&str>, medium: Option<&str>) -> (String, &'static str) {
        let s = classify(referrer, source, medium, &["shop.example.com".to_string()]);
        (s.source, s.channel)
    }

    #[test]
    fn channels_follow_utm_first_then_the_referrer() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str, &'a str);
        let cases: &[Case] = &[
            (None, None, None, "direct", "direct"),
            (Some(""), None, None, "direct", "direct"),
            (Some("https://www.google.de/search?q=x"), None, None, "google", "search"),
            (Some("https://duckduckgo.com/"), None, None, "duckduckgo", "search"),
            (Some("https://t.co/abc"), None, None, "twitter", "social"),
            (Some("https://m.facebook.com/story"), None, None, "facebook", "social"),
            (Some("https://mail.google.com/mail/u/0"), None, None, "mail.google.com", "email"),
            (Some("https://blog.example.org/post"), None, None, "blog.example.org", "referral"),
            (Some("https://shop.example.com/cart"), None, None, "internal", "internal"),
            (Some("https://checkout.shop.example.com/"), None, None, "internal", "internal"),
            (Some("https://www.google.com/"), Some(" Google "), Some("CPC"), "google", "paid"),
            (None, Some("Spring Newsletter"), Some("email"), "spring_newsletter", "email"),
            (None, Some("facebook"), None, "facebook", "social"),
            (None, Some("partnerco"), None, "partnerco", "referral"),
            (Some("http://user@evil.example:8080/x"), None, None, "evil.example", "referral"),
            (Some("https://notgoogle.com/"), None, None, "notgoogle.com", "referral"),
        ];
        for (referrer, source, medium, want_source, want_channel) in cases {
            assert_eq!(
                c(*referrer, *source, *medium),
                (want_source.to_string(), *want_channel),
                "{referrer:?} {source:?} {medium:?}"
            );
        }
    }
}
