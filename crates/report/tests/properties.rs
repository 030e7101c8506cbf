//! Property tests of what reporters parse from the command line: webhook templates and
//! headers. Any input gives a value or a typed error, never a panic; a template that passes the
//! start-up check always renders, and a JSON template stays valid JSON whatever the values
//! hold. `PROPTEST_CASES` sets the cases per property (256 by default).

use proptest::prelude::*;
use sih_report::webhook::{TemplateData, check, fields, parse_headers, render};

fn template() -> impl Strategy<Value = String> {
    let field = prop::sample::select(fields().to_vec()).prop_map(|f| format!("{{{{ .{f} }}}}"));
    let piece = prop_oneof![
        ".{0,12}",
        field,
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{- .Kind -}}".to_owned()),
        Just("{{ .Nope }}".to_owned()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fn data() -> impl Strategy<Value = TemplateData> {
    (".{0,30}", ".{0,30}", ".{0,30}", ".{0,30}", ".{0,30}").prop_map(
        |(event_id, kind, description, node_name, labels)| {
            let mut d = TemplateData {
                event_id,
                kind,
                description,
                node_name,
                ..TemplateData::default()
            };
            d.node.node_labels = labels;
            d
        },
    )
}

proptest! {
    #[test]
    fn a_checked_template_always_renders(t in template(), d in data()) {
        match check(&t) {
            Ok(()) => {
                prop_assert!(render(&t, &d, false).is_ok());
                prop_assert!(render(&t, &d, true).is_ok());
            }
            Err(_) => prop_assert!(render(&t, &d, false).is_err()),
        }
    }

    /// Values with quotes, backslashes and newlines never break a JSON body.
    #[test]
    fn a_json_template_renders_valid_json(d in data()) {
        let t = r#"{"text":"{{ .Description }} {{ .Kind }} {{ .NodeName }}","id":"{{ .EventID }}"}"#;
        let body = render(t, &d, true).unwrap();
        prop_assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{}", body);
    }

    #[test]
    fn no_header_string_makes_the_parser_panic(s in ".{0,200}") {
        let _ = parse_headers(&s);
    }
}
