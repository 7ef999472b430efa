//! "Did you mean …?" for misspelt keys, names and values. One place, so every rule suggests the
//! same way.

/// The closest candidate to `input`, phrased as a help line, when one is close enough to be a
/// likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(input, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate with the smallest edit distance, if it is within a third of the input's length
/// (at least 1, at most 4 edits) or differs only in case.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_lowercase();
    let limit = (input.chars().count() / 3).clamp(1, 4);
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| {
            let d = if c.to_lowercase() == lower {
                0
            } else {
                strsim::damerau_levenshtein(&lower, &c.to_lowercase())
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_names() {
        let names = ["confirmed", "cancelled", "pending"];
        assert_eq!(closest("confirmd", names), Some("confirmed"));
        assert_eq!(closest("Pending", names), Some("pending"));
        assert_eq!(closest("shipped", names), None);
    }
}
