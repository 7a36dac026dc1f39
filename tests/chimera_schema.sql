-- The part of dCache's Chimera schema (PostgreSQL) that pnfs-monitor reads, with dCache's
-- table, column and constraint names and types, as dCache's Liquibase changelog leaves
-- them (modules/chimera/src/main/resources/org/dcache/chimera/changelog/, changesets up to
-- 2.15 and later: inumber keys, t_dirs by inumber, access latency in t_inodes). Written
-- here by hand for the tests; dCache itself creates it with Liquibase.

CREATE TABLE t_inodes (
    ipnfsid varchar(36) NOT NULL,
    itype integer NOT NULL,
    imode integer NOT NULL,
    inlink integer NOT NULL,
    iuid integer NOT NULL,
    igid integer NOT NULL,
    isize bigint NOT NULL,
    iio integer NOT NULL,
    ictime timestamp NOT NULL,
    iatime timestamp NOT NULL,
    imtime timestamp NOT NULL,
    icrtime timestamp NOT NULL,
    igeneration bigint NOT NULL,
    inumber bigserial NOT NULL,
    iaccess_latency smallint,
    iretention_policy smallint,
    CONSTRAINT t_inodes_pkey PRIMARY KEY (ipnfsid),
    CONSTRAINT i_inodes_inumber UNIQUE (inumber)
);

CREATE TABLE t_dirs (
    iparent bigint NOT NULL,
    ichild bigint NOT NULL,
    iname varchar(255) NOT NULL,
    CONSTRAINT t_dirs_pkey PRIMARY KEY (iparent, iname),
    CONSTRAINT t_dirs_iparent_fkey FOREIGN KEY (iparent) REFERENCES t_inodes (inumber)
        ON UPDATE CASCADE,
    CONSTRAINT t_dirs_ichild_fkey FOREIGN KEY (ichild) REFERENCES t_inodes (inumber)
        ON UPDATE CASCADE
);
CREATE INDEX i_dirs_ichild ON t_dirs (ichild);

CREATE TABLE t_inodes_checksum (
    inumber bigint NOT NULL,
    itype integer NOT NULL,
    isum varchar(128) NOT NULL,
    CONSTRAINT t_inodes_checksum_pkey PRIMARY KEY (inumber, itype),
    CONSTRAINT t_inodes_checksum_inumber_fkey FOREIGN KEY (inumber)
        REFERENCES t_inodes (inumber) ON UPDATE CASCADE ON DELETE CASCADE
);

CREATE TABLE t_locationinfo (
    inumber bigint NOT NULL,
    itype integer NOT NULL,
    ipriority integer NOT NULL,
    ictime timestamp NOT NULL,
    iatime timestamp NOT NULL,
    istate integer NOT NULL,
    ilocation varchar(1024) NOT NULL,
    CONSTRAINT t_locationinfo_pkey PRIMARY KEY (inumber, itype, ilocation),
    CONSTRAINT t_locationinfo_inumber_fkey FOREIGN KEY (inumber)
        REFERENCES t_inodes (inumber) ON UPDATE CASCADE ON DELETE CASCADE
);

-- The namespace root and lost+found, as a new dCache has them.
INSERT INTO t_inodes (ipnfsid, itype, imode, inlink, iuid, igid, isize, iio, ictime, iatime,
                      imtime, icrtime, igeneration)
VALUES ('000000000000000000000000000000000000', 16384, 493, 3, 0, 0, 512, 0, now(), now(),
        now(), now(), 0),
       ('000000000000000000000000000000000001', 16384, 448, 2, 0, 0, 512, 0, now(), now(),
        now(), now(), 0);
INSERT INTO t_dirs (iparent, ichild, iname)
SELECT r.inumber, l.inumber, 'lost+found' FROM t_inodes r, t_inodes l
WHERE r.ipnfsid = '000000000000000000000000000000000000'
  AND l.ipnfsid = '000000000000000000000000000000000001';
