//! Any bytes → parse → validate → compile → render must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = portico_api::parse_text("fuzz.yaml", text, "default");
    let compiled = portico_model::compile(&parsed.resources, &portico_model::Options::default());
    let _ = portico_model::render::render(&compiled.snapshot);
    for d in &compiled.diagnostics {
        let _ = d.to_string();
    }
    // Again with a locality, so locality load balancing (priorities, failover, distribute) runs.
    let local = portico_model::Options { locality: Some("us-east/a/1".into()), ..portico_model::Options::default() };
    let _ = portico_model::compile(&parsed.resources, &local);
});
