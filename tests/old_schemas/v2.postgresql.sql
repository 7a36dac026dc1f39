CREATE TABLE compares (
	id SERIAL NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	started DOUBLE PRECISION NOT NULL, 
	finished DOUBLE PRECISION, 
	load_id INTEGER, 
	crawl_id INTEGER, 
	state VARCHAR(16) NOT NULL, 
	reason VARCHAR(1024), 
	missing BIGINT NOT NULL, 
	missing_bytes BIGINT NOT NULL, 
	orphan BIGINT NOT NULL, 
	orphan_bytes BIGINT NOT NULL, 
	mismatch BIGINT NOT NULL, 
	young BIGINT NOT NULL, 
	ignored BIGINT NOT NULL, 
	CONSTRAINT pk_compares PRIMARY KEY (id)
);

CREATE INDEX ix_compares_site_id ON compares (site, id);

CREATE TABLE crawls (
	id SERIAL NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	root BYTEA NOT NULL, 
	started DOUBLE PRECISION NOT NULL, 
	finished DOUBLE PRECISION, 
	complete BOOLEAN NOT NULL, 
	files BIGINT NOT NULL, 
	directories BIGINT NOT NULL, 
	empty_directories BIGINT NOT NULL, 
	unreadable_directories BIGINT NOT NULL, 
	bytes BIGINT NOT NULL, 
	"new" BIGINT NOT NULL, 
	changed BIGINT NOT NULL, 
	vanished BIGINT NOT NULL, 
	skipped BIGINT NOT NULL, 
	CONSTRAINT pk_crawls PRIMARY KEY (id)
);

CREATE TABLE inventory_loads (
	id SERIAL NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	source VARCHAR(1024) NOT NULL, 
	started DOUBLE PRECISION NOT NULL, 
	finished DOUBLE PRECISION, 
	complete BOOLEAN NOT NULL, 
	entries BIGINT NOT NULL, 
	unmapped BIGINT NOT NULL, 
	CONSTRAINT pk_inventory_loads PRIMARY KEY (id)
);

CREATE INDEX ix_inventory_loads_site_complete ON inventory_loads (site, complete);

CREATE TABLE pnfsmon_meta (
	key VARCHAR(64) NOT NULL, 
	value VARCHAR(255) NOT NULL, 
	CONSTRAINT pk_pnfsmon_meta PRIMARY KEY (key)
);

CREATE TABLE statuses (
	id BIGSERIAL NOT NULL, 
	site VARCHAR(64) NOT NULL, 
	path BYTEA NOT NULL, 
	path_hash BYTEA NOT NULL, 
	size BIGINT NOT NULL, 
	mtime_ns BIGINT NOT NULL, 
	recorded_adler32 VARCHAR(8), 
	recorded_from VARCHAR(16), 
	computed_adler32 VARCHAR(8), 
	status SMALLINT NOT NULL, 
	checked DOUBLE PRECISION, 
	claim_key DOUBLE PRECISION, 
	tag VARCHAR(96), 
	tag_expiry DOUBLE PRECISION, 
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

CREATE TABLE discrepancies (
	id BIGSERIAL NOT NULL, 
	compare_id INTEGER NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	path_hash BYTEA NOT NULL, 
	lfn BYTEA, 
	path BYTEA NOT NULL, 
	size BIGINT, 
	detail VARCHAR(255), 
	confirmed BOOLEAN NOT NULL, 
	CONSTRAINT pk_discrepancies PRIMARY KEY (id), 
	CONSTRAINT fk_discrepancies_compare_id_compares FOREIGN KEY(compare_id) REFERENCES compares (id) ON DELETE CASCADE
);

CREATE INDEX ix_discrepancies_compare_id_kind_path_hash ON discrepancies (compare_id, kind, path_hash);

CREATE TABLE events (
	id BIGSERIAL NOT NULL, 
	file_id BIGINT NOT NULL, 
	checked DOUBLE PRECISION NOT NULL, 
	worker_node VARCHAR(255) NOT NULL, 
	seconds DOUBLE PRECISION NOT NULL, 
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

CREATE TABLE inventory (
	id BIGSERIAL NOT NULL, 
	load_id INTEGER NOT NULL, 
	lfn BYTEA NOT NULL, 
	path BYTEA NOT NULL, 
	path_hash BYTEA NOT NULL, 
	size BIGINT, 
	adler32 VARCHAR(8), 
	created DOUBLE PRECISION, 
	CONSTRAINT pk_inventory PRIMARY KEY (id), 
	CONSTRAINT uq_inventory_load_id_path_hash UNIQUE (load_id, path_hash), 
	CONSTRAINT fk_inventory_load_id_inventory_loads FOREIGN KEY(load_id) REFERENCES inventory_loads (id) ON DELETE CASCADE
);

INSERT INTO pnfsmon_meta VALUES ('schema_version', '2');
