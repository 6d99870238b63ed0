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
