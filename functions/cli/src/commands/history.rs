//! `history`: what was triggered, skipped, rejected or failed, newest first.
//!
//! Reads the embedded SQLite store under `--data` (what `serve` writes), or the DynamoDB
//! table given by `--table` / `TRIGGERS_TABLE` (what the Lambda functions write).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use shared::clock::SystemClock;
use shared::console;
use shared::store::sqlite::DEFAULT_FILE_NAME;
use shared::store::{
    DynamoStore, HistoryStore, Page, PageRequest, SourceKind, SqliteStore, StoreResult, TriggerId,
    TriggerRecord, TriggerSource,
};

/// Most records one invocation reads while filtering before it stops looking.
const MAX_SCANNED: usize = 10_000;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this source: `KIND:NAME` (kind: schedule, chain, http, cli) or just `NAME`.
    #[arg(long)]
    source: Option<String>,
    /// Only records targeting this project (`gh/org/repo`).
    #[arg(long)]
    project: Option<String>,
    /// Only records descending from this root trigger id.
    #[arg(long)]
    origin: Option<String>,
    /// How many records to show.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Print the records as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Directory of the embedded store (as given to `serve`).
    #[arg(long, default_value = ".circleci-triggers", global = true)]
    data: PathBuf,
    /// Read the DynamoDB table instead of the embedded store.
    #[arg(long, env = shared::store::dynamo::TABLE_ENV, global = true)]
    table: Option<String>,
    /// Keep running and print each new record as it is written (JSON: one per line).
    #[arg(long)]
    follow: bool,
    #[command(subcommand)]
    command: Option<HistoryCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// One trigger and everything it caused, as a tree (schedule → pipelines → chains →
    /// fan-in → approval). Also takes an origin id: every tree of that origin.
    Show {
        /// A trigger id, or an origin id (a schedule slot's, shared by its targets).
        id: String,
    },
}

/// How often `--follow` looks for new records.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Which records to show; filters beyond the one an index serves are applied in code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub sources: Vec<TriggerSource>,
    pub project: Option<String>,
    pub origin: Option<TriggerId>,
}

impl Filter {
    fn parse(args: &HistoryArgs) -> anyhow::Result<Self> {
        let sources = match args.source.as_deref() {
            None => Vec::new(),
            Some(text) => match text.split_once(':') {
                Some((kind, name)) => {
                    let kind: SourceKind = kind.parse().map_err(anyhow::Error::msg)?;
                    vec![TriggerSource::new(kind, name)]
                }
                None => SourceKind::ALL
                    .into_iter()
                    .map(|kind| TriggerSource::new(kind, text))
                    .collect(),
            },
        };
        let origin = args
            .origin
            .as_deref()
            .map(|id| {
                id.parse::<TriggerId>()
                    .with_context(|| format!("--origin `{id}` is not a trigger id"))
            })
            .transpose()?;
        Ok(Self {
            sources,
            project: args.project.clone(),
            origin,
        })
    }

    fn admits(&self, record: &TriggerRecord) -> bool {
        let project = self.project.as_deref().map(canonical);
        (self.sources.is_empty() || self.sources.contains(&record.source))
            && project.is_none_or(|p| canonical(&record.target.project) == p)
            && self.origin.is_none_or(|o| record.origin == o)
    }
}

fn canonical(project: &str) -> String {
    project
        .parse::<shared::config::ProjectSlug>()
        .map_or_else(|_| project.to_owned(), |slug| slug.canonical())
}

pub fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter::parse(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store: Arc<dyn HistoryStore> = match &args.table {
            Some(table) => Arc::new(DynamoStore::from_environment(table.clone(), Arc::new(SystemClock)).await),
            None => {
                let path = args.data.join(DEFAULT_FILE_NAME);
                if !path.exists() {
                    bail!(
                        "no trigger history at {} (run `serve` with --data {}, or pass --table for DynamoDB)",
                        path.display(),
                        args.data.display()
                    );
                }
                Arc::new(SqliteStore::open(&path, Arc::new(SystemClock))?)
            }
        };
        if let Some(HistoryCommand::Show { id }) = &args.command {
            return show(store.as_ref(), id, args.json).await;
        }
        let records = collect(store.as_ref(), &filter, args.limit as usize).await?;
        if args.follow {
            return follow(store.as_ref(), &filter, records, args.json).await;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&records)?);
        } else if records.is_empty() {
            println!("no trigger records match");
        } else {
            print!("{}", render_table(&records));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `history show ID`: the trigger with its descendants (or every tree of an origin).
async fn show(store: &dyn HistoryStore, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id: TriggerId = id
        .parse()
        .with_context(|| format!("`{id}` is not a trigger id"))?;
    let origin = match store.get_record(id).await? {
        Some(record) => record.origin,
        None => id,
    };
    let filter = Filter {
        origin: Some(origin),
        ..Filter::default()
    };
    let records = collect(store, &filter, MAX_TREE).await?;
    let forest = console::build_forest(records);
    let shown: Vec<console::Node> = match console::find_subtree(&forest, id) {
        Some(node) => vec![node.clone()],
        None if origin == id => forest,
        None => Vec::new(),
    };
    if shown.is_empty() {
        bail!("no trigger or origin {id} in this history");
    }
    if json {
        let records: Vec<&TriggerRecord> = console::walk(&shown)
            .into_iter()
            .map(|(_, n)| &n.record)
            .collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        print!("{}", console::render_tree(&shown));
    }
    Ok(ExitCode::SUCCESS)
}

/// Most records of one origin `history show` reads.
const MAX_TREE: usize = 1000;

/// `--follow`: prints what `collect` found (oldest first), then each record created after
/// it, until interrupted. The table keeps the first rows' column widths.
async fn follow(
    store: &dyn HistoryStore,
    filter: &Filter,
    mut initial: Vec<TriggerRecord>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    initial.reverse();
    let mut seen: std::collections::HashSet<TriggerId> = initial.iter().map(|r| r.id).collect();
    let widths = if json {
        None
    } else {
        let table = Table::new(&initial);
        print!("{}", table.render());
        Some(table.widths)
    };
    let emit = |records: &[TriggerRecord]| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for record in records {
            match widths {
                Some(widths) => write!(out, "{}", Table::line(&widths, &row(record)))?,
                None => writeln!(out, "{}", serde_json::to_string(record)?)?,
            }
        }
        out.flush()?;
        Ok(())
    };
    if json {
        emit(&initial)?;
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let mut fresh: Vec<TriggerRecord> = collect(store, filter, 100)
            .await?
            .into_iter()
            .filter(|r| !seen.contains(&r.id))
            .collect();
        fresh.reverse();
        seen.extend(fresh.iter().map(|r| r.id));
        emit(&fresh)?;
    }
}

/// Up to `limit` matching records, newest first, using the most selective index.
pub async fn collect(
    store: &dyn HistoryStore,
    filter: &Filter,
    limit: usize,
) -> StoreResult<Vec<TriggerRecord>> {
    let mut found = Vec::new();
    if let Some(origin) = filter.origin {
        let project = filter.project.clone();
        scan(&mut found, filter, limit, |page| {
            let project = project.clone();
            async move { store.list_by_origin(origin, project.as_deref(), page).await }
        })
        .await?;
    } else if !filter.sources.is_empty() {
        // One listing per source kind (a bare name may be a schedule and an endpoint).
        for source in &filter.sources {
            scan(&mut found, filter, limit, |page| async move {
                store.list_by_source(source, page).await
            })
            .await?;
        }
    } else if let Some(project) = &filter.project {
        scan(&mut found, filter, limit, |page| async move {
            store.list_by_project(project, page).await
        })
        .await?;
    } else {
        scan(&mut found, filter, limit, |page| async move {
            store.list_recent(page).await
        })
        .await?;
    }
    found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    found.truncate(limit);
    Ok(found)
}

/// Pages through one listing, keeping what the filter admits, until `limit` are kept.
async fn scan<F, Fut>(
    found: &mut Vec<TriggerRecord>,
    filter: &Filter,
    limit: usize,
    mut list: F,
) -> StoreResult<()>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<TriggerRecord>>>,
{
    let page_size = u32::try_from(limit.clamp(1, 100)).unwrap_or(100);
    let mut request = PageRequest::first(page_size);
    let mut kept = 0;
    let mut scanned = 0;
    loop {
        let page = list(request).await?;
        scanned += page.items.len();
        for record in page.items {
            if filter.admits(&record) && kept < limit {
                found.push(record);
                kept += 1;
            }
        }
        match page.next {
            Some(cursor) if kept < limit && scanned < MAX_SCANNED => {
                request = PageRequest::after(page_size, cursor);
            }
            _ => return Ok(()),
        }
    }
}

/// The source, and for an operator's run of a schedule who ran it: `run`, `backfill` and the
/// operator route record under the schedule's own source (so retries and concurrency find
/// them), and the table must still tell them from the cron's own slots.
fn source_cell(record: &TriggerRecord) -> String {
    match (record.detail.manual, &record.detail.operator) {
        (true, Some(operator)) => format!("{} (manual: {operator})", record.source),
        (true, None) => format!("{} (manual)", record.source),
        (false, _) => record.source.to_string(),
    }
}

const HEADER: [&str; 10] = [
    "CREATED (UTC)",
    "STATUS",
    "SOURCE",
    "PROJECT",
    "ACTION",
    "PIPELINE",
    "OUTCOME",
    "ID",
    "ORIGIN",
    "REASON",
];

/// One record's cells. ORIGIN is the record's origin id on every row (a root shows its
/// own id, a schedule slot the id its targets share), so the rows of one tree show the
/// same value and `--origin` / `history show` take it.
fn row(r: &TriggerRecord) -> [String; 10] {
    [
        r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        r.status.to_string(),
        source_cell(r),
        r.target.project.clone(),
        r.action.as_str().to_owned(),
        console::pipeline_cell(r),
        console::outcome_cell(r),
        r.id.to_string(),
        r.origin.to_string(),
        r.reason.clone().unwrap_or_default(),
    ]
}

/// Rows with columns sized to their content.
struct Table {
    widths: [usize; 10],
    rows: Vec<[String; 10]>,
}

impl Table {
    fn new(records: &[TriggerRecord]) -> Self {
        let rows: Vec<[String; 10]> = records.iter().map(row).collect();
        let mut widths = HEADER.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        Self { widths, rows }
    }

    fn line(widths: &[usize; 10], cells: &[String; 10]) -> String {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        let mut text = text.trim_end().to_owned();
        text.push('\n');
        text
    }

    fn render(&self) -> String {
        let mut out = Self::line(&self.widths, &HEADER.map(str::to_owned));
        for row in &self.rows {
            out.push_str(&Self::line(&self.widths, row));
        }
        out
    }
}

/// The human table: one line per record, columns sized to their content.
pub fn render_table(records: &[TriggerRecord]) -> String {
    Table::new(records).render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};
    use shared::clock::{Clock, ManualClock};
    use shared::config::ActionKind;
    use shared::store::{PipelineRef, TriggerStatus, TriggerTarget};

    async fn seeded() -> (SqliteStore, Vec<TriggerRecord>) {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap(),
        ));
        let store = SqliteStore::in_memory(clock.clone()).unwrap();
        let mut stored = Vec::new();
        let mut root = None;
        for (kind, name, project) in [
            (SourceKind::Schedule, "nightly", "gh/acme/api"),
            (SourceKind::Chain, "deploy", "gh/acme/deploy"),
            (SourceKind::Http, "nightly", "gh/acme/web"),
            (SourceKind::Schedule, "hourly", "gh/acme/api"),
        ] {
            let mut record = TriggerRecord::new(
                TriggerSource::new(kind, name),
                TriggerTarget::project(project),
                ActionKind::Pipeline,
                clock.now(),
            );
            if kind == SourceKind::Chain {
                record = record.with_origin(root.unwrap());
            }
            record.status = TriggerStatus::Triggered;
            record.pipeline = Some(PipelineRef {
                id: format!("p-{name}-{project}"),
                number: Some(7),
                url: None,
            });
            let record = store.create_record(record).await.unwrap();
            root.get_or_insert(record.id);
            stored.push(record);
            clock.advance(TimeDelta::minutes(1));
        }
        (store, stored)
    }

    fn ids(records: &[TriggerRecord]) -> Vec<TriggerId> {
        records.iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn filters_pick_the_index_and_apply_the_rest() {
        let (store, r) = seeded().await;
        let all = collect(&store, &Filter::default(), 10).await.unwrap();
        assert_eq!(ids(&all), [r[3].id, r[2].id, r[1].id, r[0].id]);
        let limited = collect(&store, &Filter::default(), 2).await.unwrap();
        assert_eq!(ids(&limited), [r[3].id, r[2].id]);

        // A bare name matches every kind: the schedule and the endpoint called `nightly`.
        let args = |source: &str| HistoryArgs {
            source: Some(source.into()),
            project: None,
            origin: None,
            limit: 10,
            json: false,
            data: PathBuf::new(),
            table: None,
            follow: false,
            command: None,
        };
        let bare = Filter::parse(&args("nightly")).unwrap();
        assert_eq!(
            ids(&collect(&store, &bare, 10).await.unwrap()),
            [r[2].id, r[0].id]
        );
        let typed = Filter::parse(&args("schedule:nightly")).unwrap();
        assert_eq!(ids(&collect(&store, &typed, 10).await.unwrap()), [r[0].id]);
        assert!(Filter::parse(&args("cron:nightly")).is_err());

        let by_project = Filter {
            project: Some("github/acme/api".into()),
            ..Filter::default()
        };
        assert_eq!(
            ids(&collect(&store, &by_project, 10).await.unwrap()),
            [r[3].id, r[0].id]
        );
        let source_and_project = Filter {
            project: Some("gh/acme/web".into()),
            ..bare
        };
        assert_eq!(
            ids(&collect(&store, &source_and_project, 10).await.unwrap()),
            [r[2].id]
        );
        let by_origin = Filter {
            origin: Some(r[0].id),
            ..Filter::default()
        };
        assert_eq!(
            ids(&collect(&store, &by_origin, 10).await.unwrap()),
            [r[1].id, r[0].id]
        );
    }

    #[tokio::test]
    async fn the_table_has_one_line_per_record_with_aligned_columns() {
        let (_, r) = seeded().await;
        let table = render_table(&r[..2]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CREATED (UTC)"));
        assert!(lines[1].starts_with("2026-11-28 02:00:00  triggered  schedule:nightly"));
        // A root trigger is its own origin; a chained one shows its root's id: both rows
        // carry the same ORIGIN value.
        let origin_column = lines[0].find("ORIGIN").unwrap();
        let root = r[0].id.to_string();
        assert_eq!(&lines[1][origin_column..origin_column + root.len()], root);
        assert_eq!(&lines[2][origin_column..origin_column + root.len()], root);
        let outcome_column = lines[0].find("OUTCOME").unwrap();
        assert!(lines[1][outcome_column..].starts_with("running"), "{table}");
        let pipeline_column = lines[0].find("PIPELINE").unwrap();
        assert!(lines[1][pipeline_column..].starts_with("#7"), "{table}");
        let status_column = lines[0].find("STATUS").unwrap();

        // An operator's run of a schedule says so, and who ran it.
        let mut manual = r[0].clone();
        manual.detail.manual = true;
        manual.detail.operator = Some("ops".into());
        let table = render_table(&[manual]);
        assert!(table.contains("schedule:nightly (manual: ops)"), "{table}");
        assert!(
            lines
                .iter()
                .skip(1)
                .all(|l| l[status_column..].starts_with("triggered"))
        );
    }
}
