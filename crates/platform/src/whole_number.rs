//! Integers in request bodies as JSON Schema counts them: `3` and `3.0` are the same
//! integer (a client in a language without an integer type sends the second), so a body
//! the OpenAPI document calls valid is not refused for it. A fraction, or a value out of
//! the field's range, is still an error.

use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

fn whole<T: TryFrom<i64>, E: Error>(n: Number) -> Result<T, E> {
    let n = match n {
        Number::Int(i) => i,
        // Exactly representable and inside i64: the cast below is then exact.
        Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
        Number::Float(f) => return Err(E::custom(format!("expected an integer, got {f}"))),
    };
    T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
}

/// `#[serde(default, deserialize_with = "platform::whole_number::option")]`.
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    Option::<Number>::deserialize(deserializer)?
        .map(whole)
        .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::option")]
        n: Option<i32>,
    }

    fn parse(json: &str) -> Result<Option<i32>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(parse(r#"{"n": 3}"#), Ok(Some(3)));
        assert_eq!(parse(r#"{"n": 3.0}"#), Ok(Some(3)));
        assert_eq!(parse(r#"{"n": -0.0}"#), Ok(Some(0)));
        assert_eq!(parse(r#"{"n": null}"#), Ok(None));
        assert_eq!(parse(r#"{}"#), Ok(None));
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": 3e40}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "3"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
