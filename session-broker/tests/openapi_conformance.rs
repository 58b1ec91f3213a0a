//! docs/openapi.json against a real `session-broker run` on loopback: the document states every
//! limit the decoders enforce, and the broker answers what the document says.
//!
//! For each JSON request body in the document, requests are generated from its schema with a
//! seeded generator: the valid ones at the ends of every range and length (and with optional
//! fields left out or null), the invalid ones breaking one limit each (a range, a length, a
//! byte length, a pattern, a format, an item count, a missing or unknown field, a wrong type,
//! neither of `coord` and `region`). Whether a request is valid is what this file's own
//! validator of the document says (it refuses keywords it does not know, so the document stays
//! within what is checked here); the generator's intent must agree with it. Then:
//!
//! - a valid request never gets a 400 or a 413, and no 5xx but a 503 with `Retry-After`;
//! - an invalid one gets a 400 whose error names the field's path;
//! - every status is one the document lists for the operation, and every 503 has
//!   `Retry-After`.
//!
//! Session requests run twice, once with free edges and once with every edge full, so the 503
//! ("valid, nothing free now") is exercised too; `status_map_ends` pins the cases.

mod common;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::{dechunk, edge, edge_id, heartbeat, now_ms, start};
use edgeplay_broker::requests::{ENDED_DOMAIN, HEARTBEAT_DOMAIN, REGISTER_DOMAIN, sign_body};
use edgeplay_game::hash::SplitMix64;
use edgeplay_protocol::token::SigningKey;
use serde_json::{Map, Number, Value, json};

const SEED: u64 = 0x0a11_ed9e_5eed;

// ---------------------------------------------------------------------------------------------
// HTTP on loopback, with the headers (the common helper drops them).

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut retry_after = None;
    let mut chunked = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "retry-after" {
                retry_after = Some(v.trim().to_owned());
            }
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let rest = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&rest).unwrap_or(Value::String(rest)),
    }
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "edgeplay-broker-openapi-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

// ---------------------------------------------------------------------------------------------
// Patterns: the subset of ECMA-262 the document uses (anchored; literals, `\d`, `\.`, classes
// with ranges, `(?:…|…)` groups, `{n}`, `{m,n}`, `?`, `*`, `+`). Anything else is refused, so a
// new pattern in the document is either understood here or fails the test.

#[derive(Debug, Clone)]
enum Re {
    Lit(char),
    Class(Vec<(char, char)>),
    Seq(Vec<Re>),
    Alt(Vec<Re>),
    Rep(Box<Re>, usize, usize),
}

struct ReParser {
    s: Vec<char>,
    i: usize,
}

impl ReParser {
    fn parse(pattern: &str) -> Re {
        let inner = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap_or_else(|| panic!("pattern {pattern:?} is not anchored with ^…$"));
        let mut p = ReParser {
            s: inner.chars().collect(),
            i: 0,
        };
        let re = p.alt();
        assert_eq!(p.i, p.s.len(), "pattern {pattern:?}: unsupported syntax");
        re
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> char {
        let c = self.s[self.i];
        self.i += 1;
        c
    }

    fn alt(&mut self) -> Re {
        let mut branches = vec![self.seq()];
        while self.peek() == Some('|') {
            self.i += 1;
            branches.push(self.seq());
        }
        if branches.len() == 1 {
            branches.pop().unwrap()
        } else {
            Re::Alt(branches)
        }
    }

    fn seq(&mut self) -> Re {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom();
            items.push(self.quantified(atom));
        }
        Re::Seq(items)
    }

    fn atom(&mut self) -> Re {
        match self.next() {
            '(' => {
                if self.peek() == Some('?') {
                    assert_eq!(self.s.get(self.i + 1), Some(&':'), "only (?: groups");
                    self.i += 2;
                }
                let re = self.alt();
                assert_eq!(self.next(), ')', "unclosed group");
                re
            }
            '[' => {
                assert_ne!(self.peek(), Some('^'), "negated classes are not supported");
                let mut ranges = Vec::new();
                while self.peek() != Some(']') {
                    let lo = self.class_char();
                    if self.peek() == Some('-') && self.s.get(self.i + 1) != Some(&']') {
                        self.i += 1;
                        let hi = self.class_char();
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                self.i += 1;
                Re::Class(ranges)
            }
            '\\' => match self.next() {
                'd' => Re::Class(vec![('0', '9')]),
                c if !c.is_ascii_alphanumeric() => Re::Lit(c),
                c => panic!("unsupported escape \\{c}"),
            },
            c @ ('.' | '*' | '+' | '?' | '{' | '}' | ']' | '^' | '$') => {
                panic!("unsupported pattern syntax {c:?}")
            }
            c => Re::Lit(c),
        }
    }

    fn class_char(&mut self) -> char {
        match self.next() {
            '\\' => self.next(),
            c => c,
        }
    }

    fn number(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.s[start..self.i]
            .iter()
            .collect::<String>()
            .parse()
            .expect("a count")
    }

    fn quantified(&mut self, atom: Re) -> Re {
        let (min, max) = match self.peek() {
            Some('?') => (0, 1),
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('{') => {
                self.i += 1;
                let min = self.number();
                let max = if self.peek() == Some(',') {
                    self.i += 1;
                    self.number()
                } else {
                    min
                };
                assert_eq!(self.peek(), Some('}'), "unclosed {{");
                (min, max)
            }
            _ => return atom,
        };
        self.i += 1;
        Re::Rep(Box::new(atom), min, max)
    }
}

/// Every position where `re` can end when it starts at `at`.
fn ends(re: &Re, s: &[char], at: usize) -> Vec<usize> {
    let mut out: Vec<usize> = match re {
        Re::Lit(c) => (s.get(at) == Some(c))
            .then_some(at + 1)
            .into_iter()
            .collect(),
        Re::Class(r) => s
            .get(at)
            .filter(|c| r.iter().any(|(lo, hi)| (lo..=hi).contains(c)))
            .map(|_| at + 1)
            .into_iter()
            .collect(),
        Re::Seq(items) => {
            let mut cur = vec![at];
            for it in items {
                cur = cur.iter().flat_map(|&p| ends(it, s, p)).collect();
                cur.sort_unstable();
                cur.dedup();
            }
            cur
        }
        Re::Alt(bs) => bs.iter().flat_map(|b| ends(b, s, at)).collect(),
        Re::Rep(r, min, max) => {
            let mut out = if *min == 0 { vec![at] } else { Vec::new() };
            let mut cur = vec![at];
            for k in 1..=(*max).min(s.len() + 1) {
                let mut next: Vec<usize> = cur.iter().flat_map(|&p| ends(r, s, p)).collect();
                next.sort_unstable();
                next.dedup();
                if next.is_empty() {
                    break;
                }
                if k >= *min {
                    out.extend(&next);
                }
                cur = next;
            }
            out
        }
    };
    out.sort_unstable();
    out.dedup();
    out
}

fn matches(re: &Re, s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    ends(re, &chars, 0).contains(&chars.len())
}

fn generate(re: &Re, rng: &mut SplitMix64, out: &mut String) {
    match re {
        Re::Lit(c) => out.push(*c),
        Re::Class(r) => {
            let (lo, hi) = r[rng.below(r.len() as u64) as usize];
            let c = rng.range(i64::from(u32::from(lo)), i64::from(u32::from(hi)));
            out.push(char::from_u32(c as u32).expect("a char"));
        }
        Re::Seq(items) => items.iter().for_each(|it| generate(it, rng, out)),
        Re::Alt(bs) => generate(&bs[rng.below(bs.len() as u64) as usize], rng, out),
        Re::Rep(r, min, max) => {
            let n = rng.range(*min as i64, (*max).min(min + 8) as i64);
            for _ in 0..n {
                generate(r, rng, out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validator: what the document says of a value. It knows the keywords the request schemas
// use and refuses any other, so the document cannot state a limit this test does not check.

const ANNOTATIONS: &[&str] = &["description", "example", "default", "title"];
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "x-max-bytes",
    "pattern",
    "format",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "anyOf",
];
/// What `format: x-socket-address` means: an IP socket address as the broker parses it.
const FORMATS: &[&str] = &["x-socket-address"];

struct Doc {
    root: Value,
}

fn num_cmp(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a
            .as_f64()
            .unwrap()
            .partial_cmp(&b.as_f64().unwrap())
            .unwrap(),
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Doc {
    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.strip_prefix('#').expect("a local $ref");
                self.resolve(self.root.pointer(ptr).expect("the $ref exists"))
            }
            None => s,
        }
    }

    /// The schema's types (`None`: any).
    fn types(s: &Value) -> Option<Vec<&str>> {
        match s.get("type")? {
            Value::String(t) => Some(vec![t.as_str()]),
            Value::Array(ts) => Some(ts.iter().map(|t| t.as_str().unwrap()).collect()),
            t => panic!("bad type {t}"),
        }
    }

    /// `Ok` when `v` is valid, else why not.
    fn check(&self, schema: &Value, v: &Value) -> Result<(), String> {
        let s = self.resolve(schema);
        let m = s.as_object().expect("a schema object");
        for k in m.keys() {
            assert!(
                KEYWORDS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()),
                "the document uses schema keyword `{k}`, which this test does not check: teach it"
            );
        }
        if let Some(ts) = Self::types(s) {
            let t = type_of(v);
            if !ts
                .iter()
                .any(|x| *x == t || (*x == "number" && t == "integer"))
            {
                return Err(format!("type {t}, not {ts:?}"));
            }
        }
        if let Some(alts) = m.get("anyOf").and_then(Value::as_array)
            && !alts.iter().any(|a| self.check(a, v).is_ok())
        {
            return Err("matches none of anyOf".into());
        }
        if let Some(e) = m.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            return Err("not in enum".into());
        }
        if let Some(c) = m.get("const")
            && c != v
        {
            return Err("not the const".into());
        }
        match v {
            Value::Number(n) => {
                if let Some(Value::Number(min)) = m.get("minimum")
                    && num_cmp(n, min) == Ordering::Less
                {
                    return Err(format!("{n} < minimum {min}"));
                }
                if let Some(Value::Number(max)) = m.get("maximum")
                    && num_cmp(n, max) == Ordering::Greater
                {
                    return Err(format!("{n} > maximum {max}"));
                }
            }
            Value::String(t) => {
                let chars = t.chars().count() as u64;
                let get = |k: &str| m.get(k).and_then(Value::as_u64);
                if get("minLength").is_some_and(|n| chars < n) {
                    return Err("shorter than minLength".into());
                }
                if get("maxLength").is_some_and(|n| chars > n) {
                    return Err("longer than maxLength".into());
                }
                if get("x-max-bytes").is_some_and(|n| t.len() as u64 > n) {
                    return Err("more bytes than x-max-bytes".into());
                }
                if let Some(p) = m.get("pattern").and_then(Value::as_str)
                    && !matches(&ReParser::parse(p), t)
                {
                    return Err(format!("does not match {p}"));
                }
                if let Some(f) = m.get("format").and_then(Value::as_str) {
                    assert!(FORMATS.contains(&f), "unknown format {f}: teach the test");
                    if t.parse::<SocketAddr>().is_err() {
                        return Err(format!("not a {f}"));
                    }
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if m.get("minItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|x| n < x)
                {
                    return Err("fewer than minItems".into());
                }
                if m.get("maxItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|x| n > x)
                {
                    return Err("more than maxItems".into());
                }
                if let Some(is) = m.get("items") {
                    for (i, it) in items.iter().enumerate() {
                        self.check(is, it).map_err(|e| format!("[{i}]: {e}"))?;
                    }
                }
            }
            Value::Object(o) => {
                for r in m
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = r.as_str().unwrap();
                    if !o.contains_key(r) {
                        return Err(format!("missing `{r}`"));
                    }
                }
                let props = m.get("properties").and_then(Value::as_object);
                for (k, x) in o {
                    match props.and_then(|p| p.get(k)) {
                        Some(ps) => self.check(ps, x).map_err(|e| format!(".{k}: {e}"))?,
                        None if m.get("additionalProperties") == Some(&Value::Bool(false)) => {
                            return Err(format!("unknown `{k}`"));
                        }
                        None => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The generator: variants of a valid base body, each changing one thing.

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Case {
    /// What was changed, for the failure messages and the figures.
    kind: &'static str,
    /// The field it concerns (whose path a 400 must name); empty for the whole body.
    path: Vec<Seg>,
    /// Extra names a 400 must mention (the `coord`/`region` alternative).
    names: Vec<String>,
    body: Value,
    /// Whether the generator meant it to be valid (checked against the validator).
    valid: bool,
}

/// Marks a number too large for `serde_json::Value`, written into the body text as it is.
const BIG: &str = "@@big@@";

fn big(n: &str) -> Value {
    Value::String(format!("{BIG}{n}{BIG}"))
}

fn text_of(v: &Value) -> String {
    let mut t = v.to_string();
    while let Some(i) = t.find(&format!("\"{BIG}")) {
        let j = t[i + 1 + BIG.len()..].find(BIG).unwrap() + i + 1 + BIG.len();
        let n = t[i + 1 + BIG.len()..j].to_owned();
        t.replace_range(i..j + BIG.len() + 1, &n);
    }
    t
}

fn get_mut<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

fn with(base: &Value, path: &[Seg], x: Value) -> Value {
    let mut b = base.clone();
    *get_mut(&mut b, path) = x;
    b
}

fn without(base: &Value, path: &[Seg]) -> Value {
    let mut b = base.clone();
    let (last, parent) = path.split_last().expect("a field");
    let Seg::Key(k) = last else {
        panic!("only fields are removed")
    };
    get_mut(&mut b, parent)
        .as_object_mut()
        .expect("an object")
        .remove(k);
    b
}

fn ascii(rng: &mut SplitMix64, n: u64) -> String {
    (0..n)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect()
}

/// One representative of each JSON type, for the wrong-type variants.
fn representatives() -> Vec<(&'static str, Value)> {
    vec![
        ("null", Value::Null),
        ("boolean", json!(true)),
        ("integer", json!(7)),
        ("number", json!(1.5)),
        ("string", json!("seven")),
        ("array", json!([])),
        ("object", json!({})),
    ]
}

struct Gen<'a> {
    doc: &'a Doc,
    rng: SplitMix64,
    cases: Vec<Case>,
}

impl Gen<'_> {
    fn push(&mut self, kind: &'static str, path: &[Seg], body: Value, valid: bool) {
        self.cases.push(Case {
            kind,
            path: path.to_vec(),
            names: Vec::new(),
            body,
            valid,
        });
    }

    /// Variants of `base` at `path`, whose schema is `schema`.
    fn walk(&mut self, base: &Value, path: &[Seg], schema: &Value) {
        let doc = self.doc;
        let s = doc.resolve(schema);
        // `anyOf: [X, {type: null}]` is a nullable X.
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array)
            && s.get("type").is_none()
            && alts.len() == 2
            && alts[1] == json!({"type": "null"})
        {
            self.push(
                "null where allowed",
                path,
                with(base, path, Value::Null),
                true,
            );
            self.types(base, path, &["object", "null"]);
            let inner = alts[0].clone();
            return self.walk_typed(base, path, doc.resolve(&inner));
        }
        let ts: Vec<String> = Doc::types(s)
            .expect("a request schema names its type")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if ts.iter().any(|t| t == "null") && !path.is_empty() {
            self.push(
                "null where allowed",
                path,
                with(base, path, Value::Null),
                true,
            );
        }
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        self.types(base, path, &ts);
        self.walk_typed(base, path, s);
    }

    /// One variant per JSON type the schema does not allow.
    fn types(&mut self, base: &Value, path: &[Seg], allowed: &[&str]) {
        for (t, v) in representatives() {
            let ok = allowed
                .iter()
                .any(|a| *a == t || (*a == "number" && t == "integer"));
            if !ok {
                self.push("wrong type", path, with(base, path, v), false);
            }
        }
    }

    fn walk_typed(&mut self, base: &Value, path: &[Seg], s: &Value) {
        let cur = base.pointer(&pointer(path)).cloned().unwrap_or(Value::Null);
        let m = s.as_object().unwrap();
        let n = |k: &str| m.get(k).and_then(Value::as_number).cloned();
        match &cur {
            Value::Number(_) => {
                let int = type_of(&cur) == "integer";
                let (min, max) = (n("minimum"), n("maximum"));
                for (b, valid) in [(min.clone(), true), (max.clone(), true)] {
                    if let Some(b) = b {
                        self.push("boundary", path, with(base, path, Value::Number(b)), valid);
                    }
                }
                if let (Some(lo), Some(hi)) = (&min, &max) {
                    let mid = if int {
                        let m = (as_i128(lo) + as_i128(hi)) / 2;
                        match u64::try_from(m) {
                            Ok(u) => json!(u),
                            Err(_) => json!(m as i64),
                        }
                    } else {
                        json!((lo.as_f64().unwrap() + hi.as_f64().unwrap()) / 2.0)
                    };
                    self.push("inside the range", path, with(base, path, mid), true);
                }
                if let Some(lo) = min {
                    let below = if int {
                        match lo.as_i64() {
                            Some(i) => json!(i - 1),
                            None => big(&format!("{}", i128::from(lo.as_u64().unwrap()) - 1)),
                        }
                    } else {
                        json!(lo.as_f64().unwrap() - 0.5)
                    };
                    self.push("below the minimum", path, with(base, path, below), false);
                }
                if let Some(hi) = max {
                    let above = if int {
                        match hi.as_u64() {
                            Some(u) if u < u64::MAX => json!(u + 1),
                            Some(u) => big(&format!("{}", u128::from(u) + 1)),
                            None => json!(hi.as_i64().unwrap() + 1),
                        }
                    } else {
                        json!(hi.as_f64().unwrap() + 0.5)
                    };
                    self.push("above the maximum", path, with(base, path, above), false);
                }
                if int {
                    let v = cur.as_i64().map_or(json!(1.0), |i| json!(i as f64 + 0.25));
                    self.push("wrong type", path, with(base, path, v), false);
                }
            }
            Value::String(_) => self.strings(base, path, m),
            Value::Bool(b) => {
                self.push("boundary", path, with(base, path, json!(!b)), true);
            }
            Value::Array(items) => {
                let first = items.first().cloned().expect("a base array has an item");
                let get = |k: &str| m.get(k).and_then(Value::as_u64);
                let (min, max) = (get("minItems").unwrap_or(0), get("maxItems"));
                let mut counts = vec![(min, true)];
                if min > 0 {
                    counts.push((min - 1, false));
                }
                if let Some(max) = max {
                    counts.push((max, true));
                    counts.push((max + 1, false));
                } else {
                    counts.push((3, true));
                }
                for (k, valid) in counts {
                    let v = Value::Array(vec![first.clone(); k as usize]);
                    let kind = if valid {
                        "item count"
                    } else {
                        "item count outside"
                    };
                    self.push(kind, path, with(base, path, v), valid);
                }
                let items = m.get("items").cloned().expect("items");
                let mut p = path.to_vec();
                p.push(Seg::Index(0));
                self.walk(base, &p, &items);
            }
            Value::Object(o) => {
                let props = m
                    .get("properties")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let required: Vec<&str> = m
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().map(|x| x.as_str().unwrap()).collect())
                    .unwrap_or_default();
                for k in props.keys() {
                    assert!(
                        o.contains_key(k),
                        "the base body lacks `{}`: give it every field, so every field is varied",
                        render(&[path, &[Seg::Key(k.clone())]].concat())
                    );
                }
                for (k, ps) in &props {
                    let mut p = path.to_vec();
                    p.push(Seg::Key(k.clone()));
                    let req = required.contains(&k.as_str());
                    let kind = if req {
                        "required field missing"
                    } else {
                        "optional field left out"
                    };
                    self.push(kind, &p, without(base, &p), !req);
                    self.walk(base, &p, ps);
                }
                let mut p = path.to_vec();
                p.push(Seg::Key("zz_unknown".into()));
                let open = m.get("additionalProperties") != Some(&Value::Bool(false));
                let mut b = base.clone();
                get_mut(&mut b, path)["zz_unknown"] = json!(1);
                self.push("unknown field", &p, b, open);
                // `anyOf` of `required` lists: each alternative alone, and none.
                if let Some(alts) = m.get("anyOf").and_then(Value::as_array) {
                    let names: Vec<String> = alts
                        .iter()
                        .flat_map(|a| a["required"].as_array().expect("anyOf of required"))
                        .map(|x| x.as_str().unwrap().to_owned())
                        .collect();
                    for keep in names.iter().map(Some).chain([None]) {
                        let mut b = base.clone();
                        for n in &names {
                            if Some(n) != keep {
                                let mut p = path.to_vec();
                                p.push(Seg::Key(n.clone()));
                                b = without(&b, &p);
                            }
                        }
                        self.cases.push(Case {
                            kind: if keep.is_some() {
                                "one alternative of anyOf"
                            } else {
                                "no alternative of anyOf"
                            },
                            path: path.to_vec(),
                            names: if keep.is_some() {
                                Vec::new()
                            } else {
                                names.clone()
                            },
                            body: b,
                            valid: keep.is_some(),
                        });
                    }
                }
            }
            Value::Null => panic!("the base body has null at {}", render(path)),
        }
    }

    fn strings(&mut self, base: &Value, path: &[Seg], m: &Map<String, Value>) {
        let get = |k: &str| m.get(k).and_then(Value::as_u64);
        let cur = base
            .pointer(&pointer(path))
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            let re = ReParser::parse(p);
            let mut valid = vec![cur.clone()];
            valid.extend(m.get("example").and_then(Value::as_str).map(str::to_owned));
            for _ in 0..4 {
                let mut s = String::new();
                generate(&re, &mut self.rng, &mut s);
                valid.push(s);
            }
            let mut all = Vec::new();
            for v in &valid {
                let mut chars: Vec<char> = v.chars().collect();
                all.push(v.clone());
                all.extend([
                    String::new(),
                    format!("{v}0"),
                    format!("{v}!"),
                    format!("0{v}"),
                    format!("+{v}"),
                    format!("{v}{v}"),
                    v.to_uppercase(),
                    v.to_lowercase(),
                    chars[..chars.len().saturating_sub(1)].iter().collect(),
                ]);
                if let Some(c) = chars.first_mut() {
                    *c = 'g';
                }
                all.push(chars.iter().collect());
            }
            all.sort();
            all.dedup();
            for s in all {
                let ok = matches(&re, &s);
                let kind = if ok { "pattern" } else { "pattern broken" };
                self.push(kind, path, with(base, path, json!(s)), ok);
            }
            return;
        }
        if let Some(values) = m.get("enum").and_then(Value::as_array) {
            // Every listed value, and near misses of the first.
            for v in values {
                self.push("enum", path, with(base, path, v.clone()), true);
            }
            let first = values[0].as_str().expect("string enum");
            for s in [
                String::new(),
                first.to_uppercase(),
                format!("{first} "),
                format!("{first}x"),
            ] {
                self.push("not in enum", path, with(base, path, json!(s)), false);
            }
            return;
        }
        if let Some(f) = m.get("format").and_then(Value::as_str) {
            assert_eq!(f, "x-socket-address", "unknown format {f}: teach the test");
            for s in [
                "127.0.0.1:4433",
                "0.0.0.0:0",
                "203.0.113.5:65535",
                "[::1]:1",
                "[2001:db8::7]:443",
            ] {
                self.push("format", path, with(base, path, json!(s)), true);
            }
            for s in [
                "",
                "localhost:4433",
                "127.0.0.1",
                "256.0.0.1:1",
                "127.0.0.01:1",
                "127.0.0.1:65536",
                "::1:443",
                "https://127.0.0.1:4433",
            ] {
                self.push("format broken", path, with(base, path, json!(s)), false);
            }
            return;
        }
        let min = get("minLength").unwrap_or(0);
        let max = get("maxLength");
        let mut lengths = vec![(min, true)];
        if min > 0 {
            lengths.push((min - 1, false));
        }
        match max {
            Some(max) => {
                lengths.push((max, true));
                lengths.push((max + 1, false));
            }
            None => lengths.push((300, true)),
        }
        for (n, valid) in lengths {
            let s = ascii(&mut self.rng, n);
            let kind = if valid { "length" } else { "length outside" };
            self.push(kind, path, with(base, path, json!(s)), valid);
        }
        // Two-byte characters: within the byte limit, and over it while within maxLength.
        if let Some(bytes) = get("x-max-bytes") {
            let fits = "é".repeat((bytes / 2) as usize);
            self.push("byte length", path, with(base, path, json!(fits)), true);
            let over = "é".repeat((bytes / 2 + 1) as usize);
            assert!(max.is_none_or(|m| (bytes / 2 + 1) <= m));
            self.push(
                "byte length outside",
                path,
                with(base, path, json!(over)),
                false,
            );
        }
    }
}

fn as_i128(n: &Number) -> i128 {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .expect("an integer bound")
}

fn pointer(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{k}"),
            Seg::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// The cases for `schema` around `base`, each checked against the validator.
fn cases(doc: &Doc, schema: &Value, base: &Value, seed: u64) -> Vec<Case> {
    doc.check(schema, base)
        .unwrap_or_else(|e| panic!("the base body is not valid by the document: {e}\n{base}"));
    let mut g = Gen {
        doc,
        rng: SplitMix64(seed),
        cases: Vec::new(),
    };
    g.walk(base, &[], schema);
    for c in &g.cases {
        // Bodies with a number too large for a `Value` are invalid by construction.
        let verdict = if c.body.to_string().contains(BIG) {
            Err("a number too large".to_owned())
        } else {
            doc.check(schema, &c.body)
        };
        assert_eq!(
            verdict.is_ok(),
            c.valid,
            "the generator and the validator disagree on {} at `{}`: {verdict:?}\n{}",
            c.kind,
            render(&c.path),
            c.body
        );
    }
    g.cases
}

// ---------------------------------------------------------------------------------------------
// The operations and what the broker must answer.

struct Op<'a> {
    doc: &'a Doc,
    path: &'a str,
    method: &'static str,
}

impl Op<'_> {
    fn operation(&self) -> &Value {
        &self.doc.root["paths"][self.path][self.method]
    }

    fn schema(&self) -> Value {
        self.operation()["requestBody"]["content"]["application/json"]["schema"].clone()
    }

    fn documented(&self, status: u16) -> bool {
        self.operation()["responses"]
            .get(status.to_string())
            .is_some()
    }
}

#[derive(Default)]
struct Tally {
    /// (op, valid, kind) → count.
    kinds: BTreeMap<(String, bool, &'static str), u32>,
    /// (op, valid, status) → count.
    statuses: BTreeMap<(String, bool, u16), u32>,
}

impl Tally {
    fn print(&self) {
        let total: u32 = self.kinds.values().sum();
        eprintln!("{total} generated requests");
        for ((op, valid, kind), n) in &self.kinds {
            let v = if *valid { "valid" } else { "invalid" };
            eprintln!("  {op:<36} {v:<7} {kind:<28} {n}");
        }
        for ((op, valid, st), n) in &self.statuses {
            let v = if *valid { "valid" } else { "invalid" };
            eprintln!("  {op:<36} {v:<7} answered {st}: {n}");
        }
    }
}

/// Checks one answer against the document and the case: see the module docs.
fn judge(op: &Op<'_>, case: &Case, a: &Answer, tally: &mut Tally) {
    let name = format!("{} {}", op.method.to_uppercase(), op.path);
    *tally
        .kinds
        .entry((name.clone(), case.valid, case.kind))
        .or_default() += 1;
    *tally
        .statuses
        .entry((name.clone(), case.valid, a.status))
        .or_default() += 1;
    let what = format!(
        "{name}, {} {} at `{}`: answered {} {}\nbody {}",
        if case.valid { "valid" } else { "invalid" },
        case.kind,
        render(&case.path),
        a.status,
        a.body,
        text_of(&case.body)
    );
    assert!(op.documented(a.status), "undocumented status: {what}");
    if a.status == 503 {
        let secs: Option<u64> = a.retry_after.as_deref().and_then(|s| s.parse().ok());
        assert!(
            secs.is_some_and(|s| s >= 1),
            "a 503 without Retry-After: {what}"
        );
    } else {
        assert!(a.status < 500, "a 5xx other than 503: {what}");
    }
    if case.valid {
        assert!(
            a.status != 400 && a.status != 413,
            "a valid request refused: {what}"
        );
        return;
    }
    assert_eq!(
        a.status, 400,
        "an invalid request not refused with 400: {what}"
    );
    let error = a.body["error"].as_str().unwrap_or_default();
    let full = render(&case.path);
    let named = match case.path.split_last() {
        None => true,
        Some((Seg::Key(leaf), parent)) => {
            error.contains(&full)
                || ((parent.is_empty() || error.contains(&render(parent)))
                    && error.contains(&format!("`{leaf}`")))
        }
        Some((Seg::Index(_), _)) => error.contains(&full),
    };
    assert!(named, "the 400 does not name `{full}`: {what}");
    for n in &case.names {
        assert!(
            error.contains(&format!("`{n}`")),
            "the 400 does not name `{n}`: {what}"
        );
    }
}

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The signed body to send for `case`: re-signed by `key`, unless the case is about the
/// signature itself.
fn signed(case: &Case, domain: &[u8], key: &SigningKey) -> String {
    if case.path.first() == Some(&Seg::Key("signature".into())) {
        return text_of(&case.body);
    }
    let mut b = case.body.clone();
    if let Value::Object(m) = &mut b {
        m.remove("signature");
        return text_of(&sign_body(domain, b, key));
    }
    text_of(&b)
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Every JSON request body the document has is driven below; a new one fails here until it is.
#[test]
fn every_json_request_body_is_covered() {
    let doc = document();
    let mut bodies = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                bodies.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "POST /v1/edges",
            "POST /v1/edges/{id}/ended",
            "POST /v1/edges/{id}/heartbeat",
            "POST /v1/sessions",
            "POST /v1/sessions/{id}/select",
        ],
        "a JSON request body without a driver in this test"
    );
}

/// The broker serves the document this test reads.
fn served_is_the_file(addr: SocketAddr, doc: &Value) {
    let a = call(addr, "GET", "/openapi.json", "");
    assert_eq!(a.status, 200);
    assert_eq!(
        &a.body, doc,
        "the broker serves another document than docs/openapi.json"
    );
}

fn session_base() -> Value {
    json!({
        "player": "conformance",
        "coord": {"x": 1.0, "y": 0.0, "height": 1.0},
        "region": "eu",
        "width": 1280, "height": 720, "fps": 60,
        "min_gpu_class": 0,
        "max_price_per_min": 1000,
    })
}

#[test]
fn session_and_select_requests_agree_with_the_document() {
    let doc = Doc { root: document() };
    let dir = data_dir("sessions");
    let b = start(&dir, &[]);
    served_is_the_file(b.addr, &doc.root);
    let keys = [signing_key(61), signing_key(62)];
    for (i, k) in keys.iter().enumerate() {
        let a = call(
            b.addr,
            "POST",
            "/v1/edges",
            &edge(k, i as f64 * 10.0, 7100 + i as u16).to_string(),
        );
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let beat = |free: u32| {
        for k in &keys {
            let a = call(
                b.addr,
                "POST",
                &format!("/v1/edges/{}/heartbeat", edge_id(k)),
                &heartbeat(k, free).to_string(),
            );
            assert_eq!(a.status, 200, "{}", a.body);
        }
    };
    let mut tally = Tally::default();

    // Session requests, with free edges and then with every edge full.
    let op = Op {
        doc: &doc,
        path: "/v1/sessions",
        method: "post",
    };
    let session_cases = cases(&doc, &op.schema(), &session_base(), SEED);
    for free in [2, 0] {
        beat(free);
        let mut answered = BTreeMap::<u16, u32>::new();
        for (i, c) in session_cases.iter().enumerate() {
            if i % 40 == 39 {
                beat(free); // edges registered over HTTP stay alive on heartbeats
            }
            let a = call(b.addr, "POST", op.path, &text_of(&c.body));
            judge(&op, c, &a, &mut tally);
            if c.valid {
                *answered.entry(a.status).or_default() += 1;
            }
        }
        if free > 0 {
            assert!(answered.get(&201).is_some_and(|n| *n > 0), "{answered:?}");
            assert!(answered.get(&422).is_some_and(|n| *n > 0), "{answered:?}");
        } else {
            assert!(
                !answered.contains_key(&201),
                "a full broker placed: {answered:?}"
            );
            assert!(answered.get(&503).is_some_and(|n| *n > 0), "{answered:?}");
        }
    }
    beat(2);

    // Selections: each valid one on a fresh session (a session is placed once).
    let op = Op {
        doc: &doc,
        path: "/v1/sessions/{id}/select",
        method: "post",
    };
    let new_session = || {
        let a = call(b.addr, "POST", "/v1/sessions", &session_base().to_string());
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["session"].as_str().unwrap().to_owned()
    };
    let base = json!({"measured": [{"edge": edge_id(&keys[0]), "rtt_ms": 5.0}]});
    let spare = new_session();
    let mut placed = 0;
    for (i, c) in cases(&doc, &op.schema(), &base, SEED + 1)
        .iter()
        .enumerate()
    {
        if i % 40 == 39 {
            beat(2);
        }
        let sid = if c.valid {
            new_session()
        } else {
            spare.clone()
        };
        let a = call(
            b.addr,
            "POST",
            &format!("/v1/sessions/{sid}/select"),
            &text_of(&c.body),
        );
        judge(&op, c, &a, &mut tally);
        placed += u32::from(a.status == 200);
    }
    assert!(placed > 0, "no generated selection placed a session");
    tally.print();
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

/// Posts every case generated around `base` for the signed edge message documented at `path`
/// (`POST url`), each signed over `signer`'s domain with its key and with a fresh signing time
/// (one too far from the clock is a 401, not what is tested here), and judges each answer: how
/// many were accepted (200 or 201).
#[allow(
    clippy::too_many_arguments,
    reason = "one call per documented operation reads best"
)]
fn drive_signed(
    doc: &Doc,
    addr: SocketAddr,
    path: &str,
    url: &str,
    base: &Value,
    signer: (&[u8], &SigningKey),
    seed: u64,
    tally: &mut Tally,
) -> u32 {
    let op = Op {
        doc,
        path,
        method: "post",
    };
    let mut accepted = 0;
    for mut c in cases(doc, &op.schema(), base, seed) {
        if c.path.first() != Some(&Seg::Key("issued_unix_ms".into()))
            && c.body.get("issued_unix_ms").is_some_and(Value::is_u64)
        {
            c.body["issued_unix_ms"] = json!(now_ms());
        }
        let a = call(addr, "POST", url, &signed(&c, signer.0, signer.1));
        judge(&op, &c, &a, tally);
        accepted += u32::from(a.status == 200 || a.status == 201);
    }
    accepted
}

#[test]
fn edge_requests_agree_with_the_document() {
    let doc = Doc { root: document() };
    let dir = data_dir("edges");
    let b = start(&dir, &[]);
    let key = signing_key(71);
    let mut tally = Tally::default();

    let mut base = edge(&key, 0.0, 7200);
    base["echo_addr"] = json!("127.0.0.1:7201");
    base.as_object_mut().unwrap().remove("signature");
    let base = sign_body(REGISTER_DOMAIN, base, &key);
    let signer = (REGISTER_DOMAIN, &key);
    let accepted = drive_signed(
        &doc,
        b.addr,
        "/v1/edges",
        "/v1/edges",
        &base,
        signer,
        SEED + 2,
        &mut tally,
    );
    assert!(accepted > 0, "no generated registration was accepted");
    // The last accepted registration may have moved the edge anywhere: register it plainly.
    let a = call(
        b.addr,
        "POST",
        "/v1/edges",
        &edge(&key, 0.0, 7200).to_string(),
    );
    assert!(a.status == 200 || a.status == 201, "{}", a.body);

    let id = edge_id(&key);
    let base = sign_body(
        HEARTBEAT_DOMAIN,
        json!({"free_slots": 1, "draining": false, "issued_unix_ms": now_ms()}),
        &key,
    );
    let url = format!("/v1/edges/{id}/heartbeat");
    let signer = (HEARTBEAT_DOMAIN, &key);
    let beats = drive_signed(
        &doc,
        b.addr,
        "/v1/edges/{id}/heartbeat",
        &url,
        &base,
        signer,
        SEED + 3,
        &mut tally,
    );
    assert!(beats > 0, "no generated heartbeat was accepted");

    // Session-end reports: of a session that does not exist, so every valid one is a 200
    // saying it ended nothing.
    let base = sign_body(
        ENDED_DOMAIN,
        json!({"session": "ab".repeat(16), "reason": "player_left", "started_unix_ms": now_ms(),
               "duration_ms": 1000, "frames": 60, "bytes": 100_000,
               "issued_unix_ms": now_ms()}),
        &key,
    );
    let url = format!("/v1/edges/{id}/ended");
    let signer = (ENDED_DOMAIN, &key);
    let reports = drive_signed(
        &doc,
        b.addr,
        "/v1/edges/{id}/ended",
        &url,
        &base,
        signer,
        SEED + 4,
        &mut tally,
    );
    assert!(reports > 0, "no generated session-end report was accepted");
    tally.print();
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

/// The cases, one by one: sizes and rates of 0 are a 400 naming each field (they were a
/// 503 "no edge meets the request"); more fps than any edge offers is a 422 saying what to
/// relax; every edge full, or none registered, is a 503 with `Retry-After`.
#[test]
fn status_map_ends() {
    let dir = data_dir("map");
    let b = start(&dir, &[]);
    let post = |body: &Value| call(b.addr, "POST", "/v1/sessions", &body.to_string());
    let with = |k: &str, v: Value| {
        let mut s = session_base();
        s[k] = v;
        s
    };

    let a = post(&session_base());
    assert_eq!(a.status, 503, "no edge registered: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("2"), "{}", a.body);

    let k = signing_key(81);
    let a = call(
        b.addr,
        "POST",
        "/v1/edges",
        &edge(&k, 0.0, 7300).to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);

    let mut zero = session_base();
    for f in ["width", "height", "fps"] {
        let a = post(&with(f, json!(0)));
        assert_eq!(a.status, 400, "{f} 0: {}", a.body);
        let e = a.body["error"].as_str().unwrap();
        assert!(e.contains(&format!("`{f}`")), "{e}");
        zero[f] = json!(0);
    }
    let a = post(&zero);
    assert_eq!(a.status, 400, "width, height and fps 0: {}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("`width`"),
        "{}",
        a.body
    );

    let a = post(&with("fps", json!(240)));
    assert_eq!(a.status, 422, "{}", a.body);
    let e = a.body["error"].as_str().unwrap();
    assert!(e.contains("relax `fps` to 60"), "{e}");
    assert!(a.retry_after.is_none());
    let a = post(&with("min_gpu_class", json!(7)));
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("`min_gpu_class`"),
        "{}",
        a.body
    );
    let mut lost = with("region", json!("mars"));
    lost.as_object_mut().unwrap().remove("coord");
    let a = post(&lost);
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("`mars`"),
        "{}",
        a.body
    );

    let full = call(
        b.addr,
        "POST",
        &format!("/v1/edges/{}/heartbeat", edge_id(&k)),
        &heartbeat(&k, 0).to_string(),
    );
    assert_eq!(full.status, 200, "{}", full.body);
    let a = post(&session_base());
    assert_eq!(a.status, 503, "every edge full: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("2"));
    assert!(
        a.body["error"].as_str().unwrap().contains("Retry-After"),
        "{}",
        a.body
    );
    // What no edge could ever meet stays a 422 while they are full.
    assert_eq!(post(&with("fps", json!(240))).status, 422);

    let free = call(
        b.addr,
        "POST",
        &format!("/v1/edges/{}/heartbeat", edge_id(&k)),
        &heartbeat(&k, 1).to_string(),
    );
    assert_eq!(free.status, 200, "{}", free.body);
    assert_eq!(post(&session_base()).status, 201);
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}
