//! How the lookup reaches the server: a cached named statement by default, the unnamed
//! statement with `--db-statement-cache-capacity 0` (PgBouncer before 1.21), and which startup
//! parameters the pool sends. Observed on the wire through the counting proxy.

use instauth::db;
use instauth::db::DatabaseSettings;

use crate::helpers::app::spawn_app_behind_proxy_with;

const REQUESTS: usize = 6;

#[tokio::test]
async fn the_default_cache_prepares_the_lookup_once_per_connection() {
    let (app, proxy) = spawn_app_behind_proxy_with(|options| {
        options.database.max_connections = 1;
    })
    .await;
    app.seed().coder_workspace("i-cached", &["dev"]).await;
    // The migrations ran through the proxy too; count from here.
    let (statements, parses, named) = (proxy.statements(), proxy.parses(), proxy.named_parses());
    for _ in 0..REQUESTS {
        assert_eq!(app.aws("i-cached", None).await.status, 200);
    }
    assert_eq!(proxy.statements() - statements, REQUESTS);
    assert_eq!(
        proxy.parses() - parses,
        1,
        "parsed once, then reused by name"
    );
    assert_eq!(proxy.named_parses() - named, 1);
}

#[tokio::test]
async fn cache_capacity_zero_never_leaves_a_named_statement_on_the_server() {
    let (app, proxy) = spawn_app_behind_proxy_with(|options| {
        options.database.max_connections = 1;
        options.database.statement_cache_capacity = 0;
    })
    .await;
    app.seed().coder_workspace("i-unnamed", &["dev"]).await;
    let (statements, parses, named) = (proxy.statements(), proxy.parses(), proxy.named_parses());
    for _ in 0..REQUESTS {
        assert_eq!(app.aws("i-unnamed", None).await.status, 200);
        assert_eq!(app.aws("i-missing", None).await.status, 404);
    }
    // sqlx alone would prepare a new named statement per request here and never close it.
    assert_eq!(
        proxy.named_parses() - named,
        0,
        "only the unnamed statement is used"
    );
    assert_eq!(
        proxy.parses() - parses,
        2 * REQUESTS,
        "parsed on every request"
    );
    assert_eq!(
        proxy.statements() - statements,
        2 * REQUESTS,
        "still one statement per request"
    );
}

#[test]
fn startup_parameters_carry_the_timeout_only_when_set() {
    let mut settings = DatabaseSettings::new(sqlx::postgres::PgConnectOptions::new());
    assert_eq!(
        db::connect_options(&settings).get_options(),
        Some("-c statement_timeout=2000")
    );
    settings.statement_timeout = std::time::Duration::ZERO;
    assert_eq!(db::connect_options(&settings).get_options(), None);
}
