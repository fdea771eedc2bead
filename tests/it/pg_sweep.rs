//! The PostgreSQL store deletes the content of removed messages: a one-chunk message's rows
//! in the removing statement, a larger one's by each node's sweeper soon after, from a note
//! taken in the removing transaction; against a real server.

use crate::common::pg::Pg;
use crate::postgres::store_at;
use mx2::queue::{OperatorAction, Store, suite};
use std::time::{Duration, Instant};

/// Takes a queue back to before the sweeper (schema step 12; run first), for tests of older
/// queues.
pub(crate) const UNDO_SWEEP: &str = "DROP TRIGGER messages_bodies_of_removed ON messages;
     DROP FUNCTION mx2_bodies_of_removed(); DROP TABLE doomed_bodies;
     ALTER TABLE bodies ADD FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE;";

fn count(db: &str, sql: &str) -> u64 {
    Pg::shared().sql(db, sql).parse().unwrap()
}

#[tokio::test]
async fn removed_content_is_deleted_at_once_or_by_the_sweeper() {
    let url = Pg::shared().fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let s = store_at(&url, "sweep").await;
    let mut small = suite::message("small", &[("a@x.test", "x.test")]);
    small.body = vec![b'x'; 1000];
    let mut large = suite::message("large", &[("b@x.test", "x.test")]);
    large.body = (0..(3 << 20) + 5u32).map(|i| (i % 253) as u8).collect();
    s.insert(small).await.unwrap();
    s.insert(large).await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM bodies"), 5);
    // No foreign key holds the rows to their message any more.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM pg_constraint WHERE conrelid = 'bodies'::regclass AND contype = 'f'"
        ),
        0
    );

    // The removal, looked at inside its own transaction (no sweeper sees the note yet).
    let (tx, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n = async |sql: &str| -> i64 { tx.query_one(sql, &[]).await.unwrap().get(0) };
    tx.batch_execute("BEGIN; DELETE FROM messages WHERE id IN ('small', 'large')")
        .await
        .unwrap();
    assert_eq!(n("SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(
        n("SELECT COUNT(*) FROM bodies WHERE message_id = 'small'").await,
        0,
        "a one-chunk message's rows go with it"
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM bodies WHERE message_id = 'large'").await,
        4,
        "a larger message's rows wait for the sweeper"
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM doomed_bodies WHERE message_id = 'large'").await,
        1,
        "noted in the removing transaction"
    );
    tx.batch_execute("COMMIT").await.unwrap();
    assert!(
        matches!(
            s.body("large").await,
            Err(mx2::queue::StoreError::NotFound(_))
        ),
        "a removed message's content is not found"
    );

    // Through the store: an operator's delete of another large message.
    let mut other = suite::message("other", &[("c@x.test", "x.test")]);
    other.body = vec![b'y'; (2 << 20) + 1];
    s.insert(other).await.unwrap();
    s.act(vec!["other".into()], OperatorAction::Delete, 0)
        .await
        .unwrap();

    let t0 = Instant::now();
    while count(&db, "SELECT COUNT(*) FROM bodies")
        + count(&db, "SELECT COUNT(*) FROM doomed_bodies")
        > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the sweeper left {} rows",
            count(&db, "SELECT COUNT(*) FROM bodies")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("swept within {:?} of the lock's release", t0.elapsed());
}
