//! `GET /schemas/ids/{id}` is the registry's hot path (serializers and deserializers call it): finding a
//! schema by context and id must not allocate. A counting allocator (stats_alloc) for this test binary checks it.

use std::alloc::System;
use std::sync::{Arc, RwLock};

use fjord_registry::context::PrefixFilter;
use fjord_registry::records::{Record, SchemaValue};
use fjord_registry::state::State;
use fjord_registry::store::Store;
use fjord_registry::Registry;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

// Counts every allocation of the process: nextest runs each test in its own process, so no other test's
// allocations are counted.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations_during(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    region.change().allocations
}

fn schema(subject: &str, id: i32, text: &str) -> Record {
    let value: SchemaValue = serde_json::from_value(serde_json::json!({
        "subject": subject, "version": 1, "id": id, "schema": text, "deleted": false
    }))
    .unwrap();
    Record::Schema(subject.into(), 1, Some(value))
}

#[test]
fn finding_a_schema_by_context_and_id_allocates_nothing() {
    let mut st = State::default();
    st.apply(schema("a", 1, r#""string""#));
    st.apply(schema(":.team:b", 1, r#""int""#));
    let mut found = Vec::with_capacity(300);
    let n = allocations_during(|| {
        for _ in 0..100 {
            found.push(st.schema(".", 1).is_some());
            found.push(st.schema(".team", 1).is_some());
            found.push(st.schema(".none", 1).is_some());
        }
    });
    assert_eq!(n, 0, "allocations while looking schemas up");
    assert_eq!(&found[..3], &[true, true, false]);

    // The registry's `GET /schemas/ids/{id}` lookup (no subject: the default context) shares the entry.
    let state = Arc::new(RwLock::new(st));
    let registry = Registry::new(state.clone(), Store::Memory(state));
    let mut answers = Vec::with_capacity(100);
    let n = allocations_during(|| {
        for _ in 0..100 {
            answers.push(registry.schema_by_id(1, None).map(|(_, e)| e));
        }
    });
    assert_eq!(n, 0, "allocations while answering GET /schemas/ids/1");
    assert_eq!(answers[99].as_ref().unwrap().schema, r#""string""#);
}

/// Scans over subjects (a context's subjects for deletes, references, tombstones; `subjectPrefix`) cost a
/// bounded number of allocations per scan, not some per subject.
#[test]
fn subject_scans_allocate_per_scan_not_per_subject() {
    let mut st = State::default();
    for i in 0..500 {
        st.apply(schema(&format!("s{i}"), 1, r#""string""#));
        st.apply(schema(&format!(":.team:s{i}"), 1, r#""int""#));
        st.apply(schema(&format!(":.teams:s{i}"), 1, r#""int""#));
    }
    let mut counts = Vec::with_capacity(3);
    let n = allocations_during(|| {
        for ctx in [".", ".team", ".none"] {
            counts.push(st.subjects_in(ctx).count());
        }
    });
    assert_eq!(counts, vec![500, 500, 0]);
    assert!(n <= 6, "{n} allocations for three scans of 1,500 subjects");

    let filter = PrefixFilter::new(":*:s1");
    let mut matched = 0;
    let n = allocations_during(|| {
        matched = st.subjects.keys().filter(|s| filter.matches(s)).count();
    });
    assert_eq!(matched, 3 * 111, "s1, s10-s19, s100-s199 in each context");
    assert_eq!(n, 0, "allocations while matching a subject prefix");
}
