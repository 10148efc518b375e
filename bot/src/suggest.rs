//! Close matches for a mistyped name.

/// ` (did you mean `a` or `b`?)`, or nothing when no candidate is close.
pub fn did_you_mean<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let typed_lower = typed.to_ascii_lowercase();
    let mut close: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| {
            let lower = c.to_ascii_lowercase();
            let score = if lower.contains(&typed_lower) || typed_lower.contains(&lower) {
                1.0
            } else {
                strsim::jaro_winkler(&typed_lower, &lower)
            };
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    close.dedup_by(|a, b| a.1 == b.1);
    let names: Vec<String> = close.iter().take(3).map(|(_, c)| format!("`{c}`")).collect();
    match names.len() {
        0 => String::new(),
        _ => format!(" (did you mean {}?)", names.join(" or ")),
    }
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        assert_eq!(did_you_mean("chekout", ["checkout", "search_to_product"]), " (did you mean `checkout`?)");
        assert_eq!(did_you_mean("zzz", ["checkout"]), "");
        assert_eq!(did_you_mean("cart", ["cart_any_order", "checkout"]), " (did you mean `cart_any_order`?)");
    }
}
