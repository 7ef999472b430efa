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

/// Inputs longer than this get no suggestion.
const MAX_NAME: usize = 64;

/// The candidate with the smallest edit distance, if it is within a third of the input's length
/// (at least 1, at most 4 edits) or differs only in case.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = input.chars().count();
    // Names people misspell are short; a megabyte value is no typo of anything, and comparing
    // it would cost length × length per candidate.
    if length > MAX_NAME {
        return None;
    }
    let lower = input.to_lowercase();
    let limit = (length / 3).clamp(1, 4);
    candidates
        .into_iter()
        .filter(|c| *c != input)
        // More than `limit` characters apart in length is more than `limit` edits apart.
        .filter(|c| c.len() <= MAX_NAME * 4 && c.chars().count().abs_diff(length) <= limit)
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

    #[test]
    fn huge_inputs_and_candidates_are_not_compared() {
        let huge = "x".repeat(1_000_000);
        let near = format!("{huge}y");
        assert_eq!(closest(&huge, [near.as_str(), "pending"]), None);
        assert_eq!(
            closest("pendin", [near.as_str(), "pending"]),
            Some("pending")
        );
    }
}
