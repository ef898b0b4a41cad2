//! proptest strategies shared by the property tests of several crates (`#[path]`-included by
//! `middleware/tests/proptest_parsers.rs` and `server/tests/proptest_config.rs`, next to the
//! oracles in `fuzz/src/oracle/`). The cargo-fuzz side builds its inputs from raw bytes instead
//! (`fuzz/src/lib.rs`), so this file is not part of the fuzz crate.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON document up to three levels deep: nulls, booleans, integers of both signs, finite
/// floats, short strings, small arrays and objects.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
