//! Aligned text tables, as `kubectl get` prints them: columns two spaces apart, each as wide as
//! its widest cell (counted in characters) or its minimum, the last one not padded, no trailing
//! spaces. `list`, the per-node report of a cluster run and the check results use it.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub align: Align,
    pub min_width: usize,
}

pub const LEFT: Column = Column { align: Align::Left, min_width: 0 };
pub const RIGHT: Column = Column { align: Align::Right, min_width: 0 };

/// The column widths that fit `rows` (the header among them).
pub fn widths(columns: &[Column], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.min_width).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// One row at `widths`, without its line end.
pub fn line(columns: &[Column], widths: &[usize], row: &[String]) -> String {
    let mut out = String::new();
    for (i, ((cell, column), w)) in row.iter().zip(columns).zip(widths).enumerate() {
        if i + 1 == row.len() {
            out.push_str(cell);
        } else {
            match column.align {
                Align::Left => out.push_str(&format!("{cell:w$}  ")),
                Align::Right => out.push_str(&format!("{cell:>w$}  ")),
            }
        }
    }
    out.trim_end().to_owned()
}

/// Every row, one line each.
pub fn render(columns: &[Column], rows: &[Vec<String>]) -> String {
    let widths = widths(columns, rows);
    rows.iter().map(|row| line(columns, &widths, row) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let columns = [LEFT, Column { align: Align::Right, min_width: 5 }, LEFT];
        let text =
            render(&columns, &[row(&["NAME", "N", "NOTE"]), row(&["a-long-name", "12", ""]), row(&["b", "3", "x"])]);
        assert_eq!(text, "NAME             N  NOTE\na-long-name     12\nb                3  x\n");
    }
}
