//! Throughput of the matrix product behind every dense and convolution layer, against the
//! machine's measured FMA peak (peers.md: 234-241 GFLOP/s on one core, 466-470 on both).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nn::kernels::{matmul, MatMut, MatRef};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn square_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    group
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(3));
    for &n in &[64usize, 256, 512, 1024] {
        let (a, b) = (values(n * n), values(n * n));
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, &n| {
            bench.iter(|| {
                matmul(
                    MatRef::row_major(&a, n, n),
                    MatRef::row_major(&b, n, n),
                    MatMut::row_major(&mut out, n, n),
                    false,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, square_products);
criterion_main!(benches);
