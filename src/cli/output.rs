//! Output formats shared by every command: etcdctl's `-w simple|json|table`.

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

/// etcdctl's table look: `+---+` rules above and below the header and at the bottom only.
const ETCDCTL_STYLE: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

/// A table in etcdctl's style: upper-case centred headers, left-aligned cells.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(ETCDCTL_STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| {
            comfy_table::Cell::new(h.to_uppercase()).set_alignment(CellAlignment::Center)
        }));
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}
