use nn::train::Tbptt;

fn main() {
    let _ = Tbptt::fixed::<16, 64, 32>();
}
