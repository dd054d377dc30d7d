-- corechat MySQL/MariaDB schema, version 1: the legacy tables exactly as the old C++ server
-- created them (same columns, types, defaults, keys and foreign keys).
--
-- Why "exactly as the old server": the engine must take over an existing deployment, so a
-- fresh database and a legacy one have to converge on the same schema. Every statement is
-- CREATE TABLE IF NOT EXISTS: on a legacy database this migration changes nothing and only
-- records version 1; every later change is a numbered migration applied to both alike.
--
-- These files are applied by the engine's own runner (persist/src/backend/mysql.rs), which
-- understands the `-- corechat:skip-if ...` guard comments used by later migrations. Do not
-- feed them to the `mariadb` client directly.

CREATE TABLE IF NOT EXISTS m_user (
  user_id       VARCHAR(20)  NOT NULL,
  user_password VARCHAR(255) NOT NULL,
  user_phone    VARCHAR(12)  NOT NULL,
  user_name     VARCHAR(255) NOT NULL,
  user_email    VARCHAR(30)  NOT NULL DEFAULT 'aa@an.com',
  user_avatar   VARCHAR(100) NOT NULL DEFAULT '/default.jpg',
  user_status   ENUM('active','inactive','busy') NOT NULL DEFAULT 'inactive',
  user_created  DATETIME     NOT NULL,
  PRIMARY KEY (user_id),
  UNIQUE KEY user_email (user_email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_friends_relation (
  user_id          VARCHAR(20) NOT NULL,
  friend_id        VARCHAR(20) NOT NULL,
  friend_relation  ENUM('pending','accepted','refused') NOT NULL DEFAULT 'pending',
  created_relation DATETIME NOT NULL,
  PRIMARY KEY (user_id, friend_id),
  KEY friend_id (friend_id),
  FOREIGN KEY (user_id)   REFERENCES m_user (user_id),
  FOREIGN KEY (friend_id) REFERENCES m_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_chatlist (
  user_id           VARCHAR(20) NOT NULL,
  comm_id           VARCHAR(20) NOT NULL,
  chat_type         ENUM('friend','group') NOT NULL,
  last_message      TEXT,
  last_message_type ENUM('text','emoticon','image','audio','vedio','file') DEFAULT NULL,
  last_time         DATETIME NOT NULL,
  unread_count      INT NOT NULL DEFAULT 0,
  chat_status       ENUM('chatting','close') NOT NULL,
  PRIMARY KEY (user_id, comm_id),
  FOREIGN KEY (user_id) REFERENCES m_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_friends_message (
  message_id        BIGINT NOT NULL AUTO_INCREMENT,
  sender_id         VARCHAR(20) NOT NULL,
  receiver_id       VARCHAR(20) NOT NULL,
  chat_type         ENUM('friend','group') NOT NULL,
  message_body      TEXT,
  message_type      ENUM('text','emoticon','image','audio','video','file') NOT NULL,
  file_path         VARCHAR(255) DEFAULT NULL,
  message_status    ENUM('received','read','delete','send') NOT NULL,
  message_timestamp DATETIME NOT NULL,
  PRIMARY KEY (message_id),
  KEY sender_id (sender_id),
  KEY receiver_id (receiver_id),
  FOREIGN KEY (sender_id)   REFERENCES m_user (user_id),
  FOREIGN KEY (receiver_id) REFERENCES m_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_groups (
  group_id VARCHAR(20) NOT NULL,
  PRIMARY KEY (group_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_groups_relation (
  group_id VARCHAR(20) NOT NULL,
  user_id  VARCHAR(20) NOT NULL,
  PRIMARY KEY (group_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS m_media_file (
  file_id    BIGINT NOT NULL AUTO_INCREMENT,
  message_id BIGINT NOT NULL,
  file_type  ENUM('text','image','file','video') NOT NULL,
  file_url   VARCHAR(255) NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (file_id),
  KEY message_id (message_id),
  FOREIGN KEY (message_id) REFERENCES m_friends_message (message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
