//! The committed JSON Schemas in `schemas/` are the ones the types generate.
//! Regenerate with `cargo run -- schema --write schemas`.

use crate::util::root;

#[test]
fn committed_schemas_match_the_rust_types() {
    for (name, generated) in pushwerk::schema::all() {
        let path = root().join("schemas").join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run `cargo run -- schema --write schemas`",
                path.display()
            )
        });
        assert!(
            committed == generated,
            "{} is stale: run `cargo run -- schema --write schemas` and commit the result",
            path.display()
        );
    }
}

#[test]
fn every_example_file_names_its_schema_for_editors() {
    for entry in std::fs::read_dir(root().join("pushes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# yaml-language-server: $schema=../schemas/")
                && first.ends_with(".schema.json"),
            "{} does not start with a yaml-language-server schema line",
            path.display()
        );
        let schema = first.rsplit('/').next().unwrap();
        assert!(
            root().join("schemas").join(schema).is_file(),
            "{schema} does not exist"
        );
    }
}
