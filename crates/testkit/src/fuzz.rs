//! Seeded random input for fuzz tests.

use serde_json::{Map, Value, json};

/// Seeded input generator for fuzz tests (xorshift64*): odd strings (control, non-BMP,
/// bidi, quoting, very long), random JSON values and objects. Repeatable per seed.
pub struct FuzzRng(pub u64);

impl FuzzRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "",
            " ",
            "a",
            "hello",
            "\u{0}",
            "\n",
            "\t",
            "\u{7f}",
            "\u{1b}[31m",
            "é",
            "😀",
            "\u{fffd}",
            "\u{202e}",
            "'; DROP TABLE events; --",
            "{\"x\":1}",
            "\\",
            "\"",
            "user",
            "assistant",
            "system",
            "summary",
            "requirements_spec",
        ];
        let mut s = String::new();
        for _ in 0..self.below(6) {
            s.push_str(self.pick(PIECES));
        }
        if self.below(20) == 0 {
            s.push_str(&"x".repeat(self.below(40_000) as usize));
        }
        s
    }

    pub fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next_u64() as i64),
            3 => json!((self.next_u64() as f64) / 7.0),
            4 | 5 => json!(self.string()),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(self.object(depth + 1, &[])),
        }
    }

    /// An object that mostly has the endpoint's field names, with random values.
    pub fn object(&mut self, depth: u32, fields: &[&str]) -> Map<String, Value> {
        let mut m = Map::new();
        for f in fields {
            if self.below(5) != 0 {
                let v = match self.below(3) {
                    0 => json!(self.string()),
                    // A map of strings: the shape `metadata` takes.
                    1 => Value::Object(
                        (0..self.below(4))
                            .map(|_| (self.string(), json!(self.string())))
                            .collect(),
                    ),
                    _ => self.value(depth),
                };
                m.insert((*f).to_owned(), v);
            }
        }
        if self.below(4) == 0 {
            m.insert(self.string(), self.value(depth));
        }
        m
    }

    /// A boundary value of some type, as text (see [`boundary_values`]).
    pub fn boundary(&mut self, id: &str) -> String {
        let values = boundary_values(id);
        values[self.below(values.len() as u64) as usize].clone()
    }

    /// Mostly `usual`; one request in eight another method, standard or made up.
    pub fn method_mostly(&mut self, usual: &str) -> String {
        if self.below(8) == 0 {
            self.method()
        } else {
            usual.to_owned()
        }
    }

    /// An HTTP method: a standard one, or one made up.
    pub fn method(&mut self) -> String {
        match self.below(3) {
            0 => self
                .pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
                .to_owned(),
            _ => format!("X{}", self.next_u64() % 1_000_000),
        }
    }
}

/// Times PostgreSQL cannot store (or only just can), as RFC 3339 or near it.
pub const BOUNDARY_TIMES: &[&str] = &[
    "-5000-01-01T00:00:00Z",
    "-4714-11-23T00:00:00Z",
    "-262143-01-01T00:00:00Z",
    "+262142-12-31T23:59:59Z",
    "294277-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "1970-01-01T00:00:00+23:59",
];

/// The extremes of 64-bit integers, and numbers JSON cannot carry.
pub const BOUNDARY_NUMBERS: &[&str] = &[
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-8210298412800000001",
    "-1",
    "0",
    "1e308",
    "NaN",
    "-0",
];

/// Every boundary value a parameter might get: times, numbers, and the keyset cursors,
/// commit positions and version tokens built from them (`id`: a real aggregate id).
pub fn boundary_values(id: &str) -> Vec<String> {
    let mut out: Vec<String> = BOUNDARY_TIMES.iter().map(|t| (*t).to_owned()).collect();
    for n in BOUNDARY_NUMBERS {
        out.push((*n).to_owned());
        out.push(format!("{n}.{id}"));
        out.push(format!("{n}.{n}"));
        out.push(format!("conversation:{id}:{n}"));
    }
    out
}
