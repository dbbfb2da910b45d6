//! The gallery of shape errors: each case under tests/ui/fail must fail to compile with the
//! message committed beside it, pointing at the offending layer. The pass cases build (not
//! just check) so post-monomorphization assertions run too.

#[test]
fn shape_errors_are_reported_at_the_offending_layer() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
