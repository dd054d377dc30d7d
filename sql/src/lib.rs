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
        name: "lean_message_writes",
        sql: include_str!("../sqlite/0002_lean_message_writes.sql"),
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

    #[test]
    fn versions_are_increasing() {
        for w in SQLITE.windows(2) {
            assert!(w[0].version < w[1].version);
        }
    }
}
