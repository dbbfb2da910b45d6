//! The table `summary()` prints for a generated network, like Keras' or torchinfo's.

use std::fmt;

/// One layer of a network, as `network!` computed it at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    /// PyTorch's module path, e.g. `classifier.0`.
    pub name: &'static str,
    /// The layer as declared, e.g. `linear(25088 => 4096)`.
    pub layer: &'static str,
    /// The output shape of one sample.
    pub output: &'static [usize],
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample in the forward pass.
    pub macs: usize,
    /// A remark on the layer (e.g. rows of the input a strided layer leaves out).
    pub note: &'static str,
}

/// A network's layers with their shapes and sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub network: &'static str,
    pub input: &'static [usize],
    pub rows: &'static [SummaryRow],
}

impl Summary {
    pub fn total_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }

    pub fn total_macs(&self) -> usize {
        self.rows.iter().map(|r| r.macs).sum()
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn dims(d: &[usize]) -> String {
    crate::shape::format_dims(d)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["name", "layer", "output", "params", "mult-adds"];
        let mut table: Vec<[String; 5]> = vec![[
            String::new(),
            "input".to_string(),
            dims(self.input),
            String::new(),
            String::new(),
        ]];
        for r in self.rows {
            table.push([
                r.name.to_string(),
                r.layer.to_string(),
                dims(r.output),
                thousands(r.params),
                thousands(r.macs),
            ]);
        }
        let mut widths = header.map(str::len);
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        writeln!(f, "{}", self.network)?;
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 5]| {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4]
            )
        };
        line(f, header)?;
        writeln!(f, "{}", "-".repeat(total_width))?;
        for row in &table {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
        }
        writeln!(f, "{}", "-".repeat(total_width))?;
        writeln!(f, "total parameters: {}", thousands(self.total_params()))?;
        writeln!(
            f,
            "total mult-adds per sample: {}",
            thousands(self.total_macs())
        )?;
        for r in self.rows.iter().filter(|r| !r.note.is_empty()) {
            writeln!(f, "note: {} {}: {}", r.name, r.layer, r.note)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_totals_the_sizes() {
        const ROWS: &[SummaryRow] = &[
            SummaryRow {
                name: "0",
                layer: "linear(64 => 32)",
                output: &[32],
                params: 2080,
                macs: 2048,
                note: "",
            },
            SummaryRow {
                name: "1",
                layer: "sigmoid",
                output: &[32],
                params: 0,
                macs: 0,
                note: "",
            },
        ];
        let s = Summary {
            network: "Tiny",
            input: &[64],
            rows: ROWS,
        };
        let text = s.to_string();
        assert!(
            text.contains("0     linear(64 => 32)  [32]     2,080"),
            "{text}"
        );
        assert!(text.contains("total parameters: 2,080"));
        assert_eq!(thousands(138_357_544), "138,357,544");
        assert_eq!(thousands(999), "999");
    }
}
