//! Output formats shared by every command: etcdctl's `-w simple|json|table`.

use std::io::Write;

use comfy_table::{
    CellAlignment, ContentArrangement, ContentLineStyle, LineStyle, Table, TableStyle,
};

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines, comma-separated fields.
    Simple,
    /// JSON, for scripts.
    Json,
    /// An ASCII table.
    Table,
}

/// Writes `text` to stdout and flushes it, so a reader at the other end of a pipe sees each
/// response of a stream (watch, keep-alive) as it arrives.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// etcdctl's table look: `+---+` rules above and below the header and at the bottom only.
const ETCDCTL_STYLE: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

/// A table in etcdctl's style: upper-case centred headers (odd padding goes to the right, as
/// etcdctl's table writer does), right-aligned cells.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .chain(std::iter::once(header[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let centred = header.iter().enumerate().map(|(i, h)| {
        let h = h.to_uppercase();
        let gap = width(i) - h.chars().count();
        let left = gap / 2;
        let text = format!("{}{h}{}", " ".repeat(left), " ".repeat(gap - left));
        comfy_table::Cell::new(text).set_alignment(CellAlignment::Left)
    });
    let mut table = Table::new();
    table
        .load_style(ETCDCTL_STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(centred);
    for row in rows {
        table.add_row(
            row.into_iter()
                .map(|c| comfy_table::Cell::new(c).set_alignment(CellAlignment::Right)),
        );
    }
    table.to_string()
}
