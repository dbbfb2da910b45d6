// Compile-time truncated BPTT settings are checked when the program is built.
use nn::train::Tbptt;

fn main() {
    let _ = Tbptt::fixed::<48, 32, 32>();
}
