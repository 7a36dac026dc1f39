CREATE TABLE crawls (
	id INTEGER NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	root BLOB NOT NULL, 
	started DOUBLE NOT NULL, 
	finished DOUBLE, 
	complete BOOLEAN NOT NULL, 
	files BIGINT NOT NULL, 
	directories BIGINT NOT NULL, 
	empty_directories BIGINT NOT NULL, 
	unreadable_directories BIGINT NOT NULL, 
	bytes BIGINT NOT NULL, 
	new BIGINT NOT NULL, 
	changed BIGINT NOT NULL, 
	vanished BIGINT NOT NULL, 
	skipped BIGINT NOT NULL, 
	CONSTRAINT pk_crawls PRIMARY KEY (id)
);

CREATE TABLE pnfsmon_meta (
	"key" VARCHAR(64) NOT NULL, 
	value VARCHAR(255) NOT NULL, 
	CONSTRAINT pk_pnfsmon_meta PRIMARY KEY ("key")
);

CREATE TABLE statuses (
	id INTEGER NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	path BLOB NOT NULL, 
	path_hash BLOB NOT NULL, 
	size BIGINT NOT NULL, 
	mtime_ns BIGINT NOT NULL, 
	recorded_adler32 VARCHAR(8), 
	recorded_from VARCHAR(16), 
	computed_adler32 VARCHAR(8), 
	status SMALLINT NOT NULL, 
	checked DOUBLE, 
	claim_key DOUBLE, 
	tag VARCHAR(96), 
	tag_expiry DOUBLE, 
	worker_node VARCHAR(255), 
	source_node VARCHAR(255), 
	bytes_read BIGINT, 
	error VARCHAR(1024), 
	pool VARCHAR(255), 
	crawl_gen INTEGER NOT NULL, 
	CONSTRAINT pk_statuses PRIMARY KEY (id), 
	CONSTRAINT uq_statuses_site_path_hash UNIQUE (site, path_hash)
);

CREATE INDEX ix_statuses_claim_key ON statuses (claim_key);

CREATE INDEX ix_statuses_lease ON statuses (tag_expiry);

CREATE INDEX ix_statuses_site_crawl_gen ON statuses (site, crawl_gen);

CREATE INDEX ix_statuses_status_site ON statuses (status, site);

CREATE TABLE events (
	id INTEGER NOT NULL, 
	file_id BIGINT NOT NULL, 
	checked DOUBLE NOT NULL, 
	worker_node VARCHAR(255) NOT NULL, 
	seconds DOUBLE NOT NULL, 
	source_node VARCHAR(255), 
	source_pool VARCHAR(255), 
	size BIGINT NOT NULL, 
	bytes_read BIGINT NOT NULL, 
	status SMALLINT NOT NULL, 
	computed_adler32 VARCHAR(8), 
	error VARCHAR(1024), 
	CONSTRAINT pk_events PRIMARY KEY (id), 
	CONSTRAINT fk_events_file_id_statuses FOREIGN KEY(file_id) REFERENCES statuses (id) ON DELETE CASCADE
);

CREATE INDEX ix_events_checked ON events (checked);

CREATE INDEX ix_events_file_id_checked ON events (file_id, checked);

INSERT INTO pnfsmon_meta VALUES ('schema_version', '1');
