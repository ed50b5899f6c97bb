//! Whatever the bytes, loading a definition returns problems or a workflow:
//! never a panic, a hang or a huge allocation.

use proptest::prelude::*;

fn load(bytes: &[u8]) -> Result<(), usize> {
    let mut no_files = |_: &str| Err("no files here".to_owned());
    cairn_domain::load("fuzz.yaml", bytes, &mut no_files).map(|_| ()).map_err(|p| p.len())
}

/// Pieces of YAML and templates, so random texts reach the deeper checks.
const PIECES: &[&str] = &[
    "cairn: 1\n",
    "id: x\n",
    "steps:\n",
    "  - id: a\n",
    "    set: 1\n",
    "    needs: [a]\n",
    "    agent: w\n",
    "    prompt: \"{{ steps.a.output }}\"\n",
    "  - ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a ",
    "\"",
    "'",
    ": ",
    "- ",
    "\n",
    "  ",
    "{{",
    "}}",
    "{%",
    "%}",
    "for_each: { items: x }\n",
    "loop: { max_iters: 2 }\n",
    "#",
    "|\n",
    "on_failure: { goto: a }\n",
    "\t",
    "\u{0}",
    "é",
    "null",
    "~",
    "!!str ",
    "? ",
    "---\n",
    "...\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = load(&bytes);
    }

    #[test]
    fn arbitrary_yaml_shaped_texts_never_panic(picks in proptest::collection::vec(0..PIECES.len(), 0..80)) {
        let text: String = picks.iter().map(|&i| PIECES[i]).collect();
        let _ = load(text.as_bytes());
    }

    #[test]
    fn every_example_mutated_never_panics(
        example in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut files: Vec<_> = std::fs::read_dir(&dir).expect("examples").flatten().map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
        files.sort();
        assert!(files.len() >= 6, "every example: {files:?}");
        let mut bytes = std::fs::read(&files[example.index(files.len())]).expect("example");
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = load(&bytes);
    }
}
