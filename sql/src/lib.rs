//! The schema of corechat's database, as numbered migrations.
//!
//! The `.sql` files beside this crate are the source of truth; this crate only embeds them so
//! that the server binary carries its own schema. Each backend records the versions it has
//! applied in a table `corechat_schema_version` and applies each migration once, in order.

/// One numbered migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// One or more statements separated by `;` at the end of a line.
    pub sql: &'static str,
}

/// The migrations of the embedded (SQLite) store, in order.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../sqlite/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "lean_message_and_chat_tables",
        sql: include_str!("../sqlite/0002_lean_message_and_chat_tables.sql"),
    },
];

/// The migrations of a MySQL 8 / MariaDB 10.6+ database, in order.
///
/// Version 1 is the legacy schema of the old C++ server (`CREATE TABLE IF NOT EXISTS`), so a
/// fresh database and one the old server left converge; later versions change both in place
/// without rewriting data. A statement may be preceded by a guard comment
/// `-- corechat:skip-if column|index|foreign-key TABLE.NAME` (skipped when the object exists) or
/// `-- corechat:skip-unless ...` (skipped when it does not): MySQL 8 has no
/// `ADD COLUMN IF NOT EXISTS` / `CREATE INDEX IF NOT EXISTS` / `DROP ... IF EXISTS` for all of
/// these, so the MySQL backend's runner checks `information_schema` first.
pub const MYSQL: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../mysql/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "chatlist_video",
        sql: include_str!("../mysql/0002_chatlist_video.sql"),
    },
    Migration {
        version: 3,
        name: "relation_requested_by",
        sql: include_str!("../mysql/0003_relation_requested_by.sql"),
    },
    Migration {
        version: 4,
        name: "message_body_mediumtext",
        sql: include_str!("../mysql/0004_message_body_mediumtext.sql"),
    },
    Migration {
        version: 5,
        name: "message_receiver_status_index",
        sql: include_str!("../mysql/0005_message_receiver_status_index.sql"),
    },
    Migration {
        version: 6,
        name: "lean_message_writes",
        sql: include_str!("../mysql/0006_lean_message_writes.sql"),
    },
];

/// Splits a migration into statements: a statement ends with `;` at the end of a line.
/// Lines starting with `--` are comments.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let t = line.trim();
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            let s = cur.trim().trim_end_matches(';').trim().to_string();
            if !s.is_empty() {
                out.push(s);
            }
            cur.clear();
        }
    }
    let s = cur.trim().to_string();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_skips_comments() {
        let s = statements("-- c\nCREATE TABLE a (x INT);\n\nCREATE TABLE b (\n y INT\n);\n");
        assert_eq!(
            s,
            vec!["CREATE TABLE a (x INT)", "CREATE TABLE b (\n y INT\n)"]
        );
    }

    #[test]
    fn mysql_versions_start_at_one_and_increase_by_one() {
        for (i, m) in MYSQL.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(
                !m.name.is_empty() && m.name.len() <= 100,
                "fits name VARCHAR(100)"
            );
        }
    }

    #[test]
    fn mysql_migrations_split_into_statements() {
        // Version 1 creates the seven legacy tables, each only if missing.
        let v1 = statements(MYSQL[0].sql);
        assert_eq!(v1.len(), 7);
        assert!(v1
            .iter()
            .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS m_")));
        for m in &MYSQL[1..] {
            let s = statements(m.sql);
            assert!(!s.is_empty(), "{} has statements", m.name);
            // Only in-place changes: nothing that drops or rewrites data.
            for stmt in &s {
                let upper = stmt.to_uppercase();
                // Indexes and foreign keys may go (0006); tables, columns and rows never.
                for data in ["DROP TABLE", "DROP COLUMN", "DROP DATABASE", "TRUNCATE"] {
                    assert!(!upper.contains(data), "{}: {stmt}", m.name);
                }
                assert!(!upper.starts_with("UPDATE") && !upper.starts_with("DELETE"));
            }
        }
    }

    #[test]
    fn mysql_guards_name_a_known_kind_and_sit_right_before_a_statement() {
        for m in MYSQL {
            let lines: Vec<&str> = m.sql.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(guard) = line.trim().strip_prefix("-- corechat:") else {
                    continue;
                };
                let mut words = guard.split_whitespace();
                let verb = words.next().unwrap_or_default();
                assert!(
                    verb == "skip-if" || verb == "skip-unless",
                    "{}: {line}",
                    m.name
                );
                let kind = words.next().unwrap_or_default();
                assert!(
                    ["column", "index", "foreign-key"].contains(&kind),
                    "{}: {line}",
                    m.name
                );
                let target = words.next().unwrap_or_default();
                assert!(target.split_once('.').is_some(), "{}: {line}", m.name);
                let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
                assert!(
                    !next.is_empty() && !next.starts_with("--"),
                    "{}: a guard applies to the statement on the next line",
                    m.name
                );
            }
        }
    }

    /// Applies the SQLite migrations up to `upto` (a version) on `conn`, as the backend does.
    fn sqlite_migrate(conn: &rusqlite::Connection, upto: u32) {
        for m in SQLITE.iter().filter(|m| m.version <= upto) {
            for stmt in statements(m.sql) {
                conn.execute_batch(&stmt).unwrap();
            }
        }
    }

    const INSERT_MESSAGE: &str = "INSERT INTO m_friends_message
        (message_id, sender_id, receiver_id, chat_type, message_body, message_type, file_path,
         message_status, message_timestamp)
        VALUES (?1, 'a', 'b', 'friend', 'hi', ?2, ' ', ?3, '2026-01-01 00:00:00')";

    const UPSERT_CHAT: &str = "INSERT INTO m_chatlist
        (user_id, comm_id, chat_type, last_message, last_message_type, last_time, unread_count,
         chat_status)
        VALUES ('a', ?1, 'friend', 'hi', ?2, 't', 1, ?3)
        ON CONFLICT (user_id, comm_id) DO UPDATE SET last_message = excluded.last_message";

    #[test]
    fn sqlite_lean_tables_keep_rows_and_rules() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        sqlite_migrate(&conn, 1);
        conn.execute(INSERT_MESSAGE, rusqlite::params![1, "text", "send"])
            .unwrap();
        conn.execute(INSERT_MESSAGE, rusqlite::params![2, "video", "received"])
            .unwrap();
        conn.execute(UPSERT_CHAT, rusqlite::params!["b", "vedio", "chatting"])
            .unwrap();
        conn.execute(UPSERT_CHAT, rusqlite::params!["c", None::<String>, "close"])
            .unwrap();
        let dump = |conn: &rusqlite::Connection| -> Vec<String> {
            let mut rows = Vec::new();
            for q in [
                "SELECT message_id || '|' || message_type || '|' || message_status
                    FROM m_friends_message ORDER BY message_id",
                "SELECT comm_id || '|' || ifnull(last_message_type, 'NULL') || '|' || chat_status
                    FROM m_chatlist ORDER BY comm_id",
            ] {
                let mut stmt = conn.prepare(q).unwrap();
                let it = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
                rows.extend(it.map(|r| r.unwrap()));
            }
            rows
        };
        let before = dump(&conn);
        sqlite_migrate_from(&conn, 2);
        assert_eq!(dump(&conn), before);

        // The same values are refused as before.
        for (t, s) in [("vedio", "send"), ("sticker", "send"), ("text", "sent")] {
            assert!(
                conn.execute(INSERT_MESSAGE, rusqlite::params![9, t, s])
                    .is_err(),
                "{t} {s}"
            );
        }
        assert!(conn
            .execute(UPSERT_CHAT, rusqlite::params!["d", "sticker", "chatting"])
            .is_err());
        assert!(conn
            .execute(UPSERT_CHAT, rusqlite::params!["d", "text", "open"])
            .is_err());
        // NULL passes a CHECK, as it did.
        conn.execute(
            "INSERT INTO m_friends_message (message_id, message_type, message_status)
                VALUES (10, NULL, NULL)",
            [],
        )
        .unwrap();

        // The indexes: one for conversations, one for undelivered messages.
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index'
                    AND tbl_name = 'm_friends_message' AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            indexes,
            [
                "idx_friends_message_conversation",
                "idx_friends_message_undelivered"
            ]
        );

        // The point of the migration: no temporary b-tree per write.
        for sql in [INSERT_MESSAGE, UPSERT_CHAT] {
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let ops: Vec<String> = stmt
                .query_map(rusqlite::params![1, "text", "send"], |r| r.get(1))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{sql}: {ops:?}");
        }
    }

    /// Applies the SQLite migration `version` alone.
    fn sqlite_migrate_from(conn: &rusqlite::Connection, version: u32) {
        for m in SQLITE.iter().filter(|m| m.version == version) {
            for stmt in statements(m.sql) {
                conn.execute_batch(&stmt).unwrap();
            }
        }
    }

    #[test]
    fn versions_are_increasing() {
        for w in SQLITE.windows(2) {
            assert!(w[0].version < w[1].version);
        }
    }
}
