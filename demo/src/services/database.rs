//! `crm-database`: the CRM's system of record, a real SQLite database
//! (embedded through `rusqlite`, seeded with accounts, contacts and
//! opportunities) behind a small HTTP API. Every statement gets a span with
//! the database semantic conventions (`db.system`, `db.query.text`, …).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{failure, seeded, ACCOUNTS, COMPANIES, INDUSTRIES};

/// The database: one connection, used from blocking threads.
#[derive(Clone)]
pub(crate) struct Crm(Arc<Mutex<Connection>>);

const SCHEMA: &str = "
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, industry TEXT NOT NULL, region TEXT NOT NULL,
    tier TEXT NOT NULL, annual_revenue INTEGER NOT NULL);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
    first_name TEXT NOT NULL, last_name TEXT NOT NULL, email TEXT NOT NULL, title TEXT NOT NULL);
CREATE INDEX contacts_by_account ON contacts(account_id);
CREATE TABLE opportunities (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL, stage TEXT NOT NULL, amount INTEGER NOT NULL, close_date TEXT NOT NULL);
CREATE INDEX opportunities_by_account ON opportunities(account_id);
";

const REGIONS: [&str; 4] = ["EMEA", "NA", "LATAM", "APAC"];
const FIRST_NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia", "Linus",
];
const LAST_NAMES: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Perlman", "Torvalds",
];
const TITLES: [&str; 4] = [
    "CTO",
    "VP Engineering",
    "Head of Procurement",
    "IT Director",
];
pub(crate) const STAGES: [&str; 5] = [
    "Prospecting",
    "Qualification",
    "Proposal",
    "Negotiation",
    "Closed Won",
];

impl Crm {
    /// An in-memory database with the same seeded rows on every start.
    pub(crate) fn seeded() -> rusqlite::Result<Self> {
        let mut connection = Connection::open_in_memory()?;
        connection.execute_batch(SCHEMA)?;
        let seed = connection.transaction()?;
        for account in 1..=ACCOUNTS {
            let mut rng = seeded(1, account);
            let id = account as i64;
            let tier = match rng.u8(0..10) {
                0..=1 => "gold",
                2..=4 => "silver",
                _ => "bronze",
            };
            seed.execute(
                "INSERT INTO accounts VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    format!("{} {}", COMPANIES[rng.usize(..COMPANIES.len())], id),
                    INDUSTRIES[rng.usize(..INDUSTRIES.len())],
                    REGIONS[rng.usize(..REGIONS.len())],
                    tier,
                    rng.i64(1_000_000..500_000_000),
                ],
            )?;
            for _ in 0..rng.u8(2..6) {
                let first = FIRST_NAMES[rng.usize(..FIRST_NAMES.len())];
                let last = LAST_NAMES[rng.usize(..LAST_NAMES.len())];
                seed.execute(
                    "INSERT INTO contacts (account_id, first_name, last_name, email, title) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, first, last, format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase()), TITLES[rng.usize(..TITLES.len())]],
                )?;
            }
            for n in 0..rng.u8(1..4) {
                seed.execute(
                    "INSERT INTO opportunities (account_id, name, stage, amount, close_date) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, format!("Renewal {}", 2026 + u32::from(n)), STAGES[rng.usize(..STAGES.len())], rng.i64(5_000..900_000), format!("2027-{:02}-15", rng.u8(1..13))],
                )?;
            }
        }
        seed.commit()?;
        Ok(Self(Arc::new(Mutex::new(connection))))
    }

    /// Runs one statement on a blocking thread, inside a span named as the
    /// database conventions ask (`SELECT crm.accounts`).
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        table: &'static str,
        sql: &'static str,
        statement: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Response> {
        let span = tracing::info_span!(
            "statement",
            otel.name = %format!("{operation} crm.{table}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system = "sqlite",
            db.system.name = "sqlite",
            db.namespace = "crm",
            db.collection.name = table,
            db.operation.name = operation,
            db.query.text = sql,
        );
        let connection = self.0.clone();
        let in_span = span.clone();
        let result =
            tokio::task::spawn_blocking(move || in_span.in_scope(|| statement(&connection.lock())))
                .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                span.record("otel.status_code", "ERROR");
                span.in_scope(|| tracing::error!(db.query.text = sql, "statement failed: {e}"));
                Err(failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("database error: {e}"),
                ))
            }
            Err(e) => Err(failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("database worker failed: {e}"),
            )),
        }
    }
}

pub(crate) fn routes(crm: Crm) -> Router {
    Router::new()
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/contacts", get(contacts))
        .route("/accounts/{id}/opportunities", get(opportunities))
        .route("/opportunities", post(create_opportunity))
        .with_state(crm)
}

fn account_row(row: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": row.get::<_, i64>(0)?,
        "name": row.get::<_, String>(1)?,
        "industry": row.get::<_, String>(2)?,
        "region": row.get::<_, String>(3)?,
        "tier": row.get::<_, String>(4)?,
        "annual_revenue": row.get::<_, i64>(5)?,
    }))
}

fn not_found(id: i64) -> Response {
    tracing::warn!(account.id = id, "account {id} not found");
    failure(StatusCode::NOT_FOUND, format!("no account {id}"))
}

async fn account(State(crm): State<Crm>, Path(id): Path<i64>) -> Response {
    const SQL: &str =
        "SELECT id, name, industry, region, tier, annual_revenue FROM accounts WHERE id = ?1";
    match crm
        .run("SELECT", "accounts", SQL, move |db| {
            db.query_row(SQL, [id], account_row).optional()
        })
        .await
    {
        Ok(Some(account)) => Json(account).into_response(),
        Ok(None) => not_found(id),
        Err(response) => response,
    }
}

async fn rows_of_account(
    crm: &Crm,
    table: &'static str,
    sql: &'static str,
    id: i64,
    row: fn(&Row<'_>) -> rusqlite::Result<Value>,
) -> Response {
    const EXISTS: &str = "SELECT 1 FROM accounts WHERE id = ?1";
    let found = crm
        .run("SELECT", "accounts", EXISTS, move |db| {
            db.query_row(EXISTS, [id], |_| Ok(())).optional()
        })
        .await;
    match found {
        Ok(Some(())) => {}
        Ok(None) => return not_found(id),
        Err(response) => return response,
    }
    match crm
        .run("SELECT", table, sql, move |db| {
            db.prepare_cached(sql)?
                .query_map([id], row)?
                .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(response) => response,
    }
}

async fn contacts(State(crm): State<Crm>, Path(id): Path<i64>) -> Response {
    const SQL: &str = "SELECT id, first_name, last_name, email, title FROM contacts WHERE account_id = ?1 ORDER BY id";
    rows_of_account(&crm, "contacts", SQL, id, |row| {
        Ok(json!({
            "id": row.get::<_, i64>(0)?,
            "first_name": row.get::<_, String>(1)?,
            "last_name": row.get::<_, String>(2)?,
            "email": row.get::<_, String>(3)?,
            "title": row.get::<_, String>(4)?,
        }))
    })
    .await
}

async fn opportunities(State(crm): State<Crm>, Path(id): Path<i64>) -> Response {
    const SQL: &str = "SELECT id, name, stage, amount, close_date FROM opportunities WHERE account_id = ?1 ORDER BY id";
    rows_of_account(&crm, "opportunities", SQL, id, |row| {
        Ok(json!({
            "id": row.get::<_, i64>(0)?,
            "name": row.get::<_, String>(1)?,
            "stage": row.get::<_, String>(2)?,
            "amount": row.get::<_, i64>(3)?,
            "close_date": row.get::<_, String>(4)?,
        }))
    })
    .await
}

#[derive(Deserialize)]
struct NewOpportunity {
    account_id: i64,
    name: String,
    stage: String,
    amount: i64,
    close_date: String,
}

async fn create_opportunity(
    State(crm): State<Crm>,
    body: Result<Json<NewOpportunity>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if !STAGES.contains(&new.stage.as_str()) || new.amount < 0 {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("stage must be one of {STAGES:?} and amount at least 0"),
        );
    }
    const SQL: &str = "INSERT INTO opportunities (account_id, name, stage, amount, close_date) SELECT id, ?2, ?3, ?4, ?5 FROM accounts WHERE id = ?1";
    let account_id = new.account_id;
    let inserted = crm
        .run("INSERT", "opportunities", SQL, move |db| {
            let rows = db.execute(
                SQL,
                params![
                    new.account_id,
                    new.name,
                    new.stage,
                    new.amount,
                    new.close_date
                ],
            )?;
            Ok((rows > 0).then(|| db.last_insert_rowid()))
        })
        .await;
    match inserted {
        Ok(Some(id)) => {
            tracing::info!(
                opportunity.id = id,
                account.id = account_id,
                "opportunity created"
            );
            (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
        }
        Ok(None) => not_found(account_id),
        Err(response) => response,
    }
}
