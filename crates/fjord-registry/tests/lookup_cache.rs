//! Lookups (`POST /subjects/{s}`) remember the identity of the schema texts they parsed; the answers must be
//! exactly those of a fresh parse, whatever was asked before.

use fjord_registry::records::Reference;
use fjord_registry::registry::SchemaRequest;
use fjord_registry::{Error, Registry};

fn req(schema: &str) -> SchemaRequest {
    SchemaRequest {
        schema: Some(schema.to_string()),
        schema_type: None,
        references: None,
        id: None,
        version: None,
        metadata: None,
        rule_set: None,
    }
}

const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
const A_SPACED: &str =
    r#"{ "type": "record", "name": "A", "fields": [ {"name": "x", "type": "int"} ] }"#;
const B: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"y","type":"int","default":0}]}"#;

#[tokio::test]
async fn repeated_lookups_answer_as_the_first_did_for_every_subject() {
    let r = Registry::in_memory();
    let id_a = r.register("s", &req(A), false).await.unwrap();
    for _ in 0..3 {
        let v = r.lookup("s", &req(A), false).unwrap();
        assert_eq!((v.version, v.id), (1, id_a));
        let v = r.lookup("s", &req(A_SPACED), false).unwrap();
        assert_eq!((v.version, v.id), (1, id_a));
        // Known text, but not in this subject; unknown subject.
        assert!(matches!(
            r.lookup("t", &req(A), false),
            Err(Error::SubjectNotFound(_))
        ));
        // A text not registered yet (cached as parsed), then registered: found from then on.
        assert!(matches!(
            r.lookup("s", &req(B), false),
            Err(Error::SchemaContentNotFound)
        ));
    }
    let id_b = r.register("s", &req(B), false).await.unwrap();
    let v = r.lookup("s", &req(B), false).unwrap();
    assert_eq!((v.version, v.id), (2, id_b));
    r.register("t", &req(A), false).await.unwrap();
    assert_eq!(r.lookup("t", &req(A), false).unwrap().id, id_a);
    // An invalid schema stays invalid (errors are not remembered as identities).
    for _ in 0..2 {
        assert!(matches!(
            r.lookup("s", &req("{\"type\":\"record\"}"), false),
            Err(Error::InvalidSchema(_))
        ));
    }
    // With references the text alone does not decide: not cached, still answered.
    let mut with_refs = req(A);
    with_refs.references = Some(Vec::<Reference>::new());
    assert_eq!(r.lookup("s", &with_refs, false).unwrap().id, id_a);
}

/// A record schema of about `size` bytes (its doc), distinct per `n`.
fn big(n: usize, size: usize) -> String {
    format!(
        r#"{{"type":"record","name":"R{n}","doc":"{}","fields":[{{"name":"x","type":"int"}}]}}"#,
        "d".repeat(size)
    )
}

#[tokio::test]
async fn lookups_of_texts_never_registered_are_not_cached() {
    let r = Registry::in_memory();
    let id = r.register("s", &req(A), false).await.unwrap();
    for n in 0..200 {
        assert!(matches!(
            r.lookup("s", &req(&big(n, 60 * 1024)), false),
            Err(Error::SchemaContentNotFound)
        ));
    }
    assert_eq!(r.lookup_cache_usage(), (0, 0));
    // A registered text is kept once, whatever the number of lookups.
    for _ in 0..3 {
        assert_eq!(r.lookup("s", &req(A_SPACED), false).unwrap().id, id);
    }
    let (entries, bytes) = r.lookup_cache_usage();
    assert_eq!(entries, 1);
    assert!(bytes >= 2 * A_SPACED.len(), "{bytes}");
}

#[test]
fn the_lookup_cache_stays_within_its_byte_bound_and_compares_whole_keys() {
    use fjord_registry::lookup_cache::{LookupCache, MAX_BYTES, MAX_TEXT};
    let cache = LookupCache::default();
    let text = "t".repeat(MAX_TEXT / 2);
    let mut peak = 0;
    for n in 0..100 {
        let subject = format!("s{n}");
        cache.insert(&subject, None, &text, &format!("identity {n}"));
        let (entries, bytes) = cache.usage();
        assert!(
            entries >= 1 && bytes <= MAX_BYTES,
            "{entries} entries, {bytes} bytes"
        );
        peak = peak.max(bytes);
        assert_eq!(
            cache.get(&subject, None, &text).as_deref(),
            Some(format!("identity {n}").as_str())
        );
    }
    assert!(peak > MAX_BYTES / 2, "filled up to its bound: {peak}");
    // Every part of the key counts.
    cache.insert("s", Some("JSON"), "{}", "json identity");
    assert_eq!(
        cache.get("s", Some("JSON"), "{}").as_deref(),
        Some("json identity")
    );
    assert_eq!(cache.get("s", None, "{}"), None);
    assert_eq!(cache.get("s", Some("JSON"), "{ }"), None);
    assert_eq!(cache.get("t", Some("JSON"), "{}"), None);
    // A text over the per-entry limit is not kept.
    cache.insert("s", None, &"x".repeat(MAX_TEXT + 1), "too big");
    assert_eq!(cache.get("s", None, &"x".repeat(MAX_TEXT + 1)), None);
}
