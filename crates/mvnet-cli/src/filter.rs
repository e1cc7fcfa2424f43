//! Docker's `-f/--filter KEY=VALUE` for `network ls` and `ps`. Several values of one key
//! match if any does (OR); different keys must all match (AND). `name` matches any part of
//! the name, `id` a prefix of the id, the others exactly; `label=KEY` or `label=KEY=VALUE`.

use std::collections::BTreeMap;

use mvnet_core::{invalid, Result};

/// Parsed filters: key -> the values given for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` pairs, refusing keys the command does not know.
    pub fn parse(pairs: &[String], known: &[&str]) -> Result<Filters> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in pairs {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                invalid!(
                    "bad format of filter (expected name=value): {}",
                    mvnet_core::quote(p)
                )
            })?;
            if !known.contains(&k) {
                return Err(invalid!(
                    "invalid filter {}: the keys here are {}",
                    mvnet_core::quote(k),
                    known.join(", ")
                ));
            }
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(Filters(map))
    }

    /// Whether an object passes: `test(key, value)` says whether one filter value matches.
    pub fn accept(&self, test: impl Fn(&str, &str) -> bool) -> bool {
        self.0
            .iter()
            .all(|(k, values)| values.iter().any(|v| test(k, v)))
    }
}

/// `label=KEY` (present) or `label=KEY=VALUE` (equal) against an object's labels.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[&str]) -> Filters {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Filters::parse(&pairs, &["name", "driver", "label", "id"]).unwrap()
    }

    fn net_test<'a>(
        name: &'a str,
        driver: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Fn(&str, &str) -> bool + 'a {
        move |k, v| match k {
            "name" => name.contains(v),
            "driver" => driver == v,
            "label" => label_matches(labels, v),
            _ => false,
        }
    }

    #[test]
    fn same_key_or_different_keys_and() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "lab".to_string())].into();
        let t = net_test("my-macvlan-net", "macvlan", &labels);
        assert!(
            f(&["name=macvlan"]).accept(&t),
            "a part of the name matches"
        );
        assert!(f(&["name=nope", "name=my-"]).accept(&t), "one of two names");
        assert!(
            !f(&["name=my-", "driver=ipvlan"]).accept(&t),
            "both keys must match"
        );
        assert!(f(&["name=my-", "driver=macvlan"]).accept(&t));
        assert!(f(&["label=env"]).accept(&t));
        assert!(f(&["label=env=lab"]).accept(&t));
        assert!(!f(&["label=env=prod"]).accept(&t));
        assert!(f(&[]).accept(&t), "no filter passes everything");
    }

    #[test]
    fn bad_filters_say_what_is_known() {
        let e = Filters::parse(&["colour=red".into()], &["name", "id"]).unwrap_err();
        assert!(e.to_string().contains("name, id"), "{e}");
        let e = Filters::parse(&["name".into()], &["name"]).unwrap_err();
        assert!(e.to_string().contains("expected name=value"), "{e}");
    }
}
