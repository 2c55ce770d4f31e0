use super::*;
use crate::kv::store::Store;
use alloc::vec;

fn open(disk: &mut MemDisk) -> (Log, OpenInfo, Store) {
    let mut store = Store::new();
    let (log, info) = Log::open(disk, false, |r| store.apply(r)).expect("open");
    (log, info, store)
}

fn set(log: &mut Log, disk: &mut MemDisk, k: &[u8], v: &[u8]) {
    log.append(&[Record::Set(k, v)]).expect("append");
    log.commit(disk).expect("commit");
}

#[test]
fn record_round_trip() {
    let mut buf = Vec::new();
    encode(&mut buf, 7, 42, 3, &Record::Set(b"key", b"value"));
    assert_eq!(buf.len(), HEADER + 8);
    assert_eq!(
        decode(&buf, 7),
        Decoded::Record {
            rec: Record::Set(b"key", b"value"),
            seq: 42,
            epoch: 3,
            len: buf.len()
        }
    );
    // Another log id, a flipped bit, a short buffer.
    assert_eq!(decode(&buf, 8), Decoded::Invalid);
    let mut bad = buf.clone();
    bad[HEADER + 1] ^= 1;
    assert_eq!(decode(&bad, 7), Decoded::Invalid);
    assert_eq!(decode(&buf[..10], 7), Decoded::NeedMore(HEADER));
    assert_eq!(decode(&buf[..HEADER + 2], 7), Decoded::NeedMore(HEADER + 8));
    // All zeros is never a record.
    assert_eq!(decode(&[0u8; 64], 0), Decoded::Invalid);
    let mut d = Vec::new();
    encode(&mut d, 1, 1, 1, &Record::Del(b"k"));
    encode(&mut d, 1, 2, 1, &Record::Clear);
    assert!(matches!(
        decode(&d, 1),
        Decoded::Record {
            rec: Record::Del(b"k"),
            seq: 1,
            ..
        }
    ));
    assert!(matches!(
        decode(&d[HEADER + 1..], 1),
        Decoded::Record {
            rec: Record::Clear,
            seq: 2,
            ..
        }
    ));
}

#[test]
fn superblock_round_trip() {
    let sb = Superblock {
        log_id: 0xdead_beef,
        epoch: 9,
        formatted_sectors: 1000,
    };
    let s = sb.encode();
    assert_eq!(Superblock::decode(&s), Ok(Some(sb)));
    assert_eq!(Superblock::decode(&[0u8; SECTOR]), Ok(None));
    let mut bad = s;
    bad[20] ^= 1;
    assert_eq!(Superblock::decode(&bad), Err(OpenError::CorruptSuperblock));
    let mut v2 = s;
    v2[8] = 2;
    assert_eq!(
        Superblock::decode(&v2),
        Err(OpenError::UnsupportedVersion(2))
    );
}

#[test]
fn fresh_disk_is_formatted_and_reopened() {
    let mut disk = MemDisk::new(64);
    disk.data[LOG_START as usize..LOG_START as usize + 4].copy_from_slice(b"junk");
    let (mut log, info, store) = open(&mut disk);
    assert_eq!(
        info,
        OpenInfo {
            formatted: true,
            records: 0
        }
    );
    assert_eq!(log.epoch(), 1);
    assert!(store.is_empty());
    // The first log sector was zeroed by the format.
    assert!(disk.data[LOG_START as usize..LOG_START as usize + 512]
        .iter()
        .all(|&b| b == 0));
    set(&mut log, &mut disk, b"a", b"1");
    set(&mut log, &mut disk, b"b", b"2");
    log.append(&[Record::Del(b"a"), Record::Set(b"c", b"3")])
        .unwrap();
    log.commit(&mut disk).unwrap();
    assert_eq!(log.records(), 4);

    let (log2, info2, store2) = open(&mut disk);
    assert_eq!(
        info2,
        OpenInfo {
            formatted: false,
            records: 4
        }
    );
    assert_eq!(log2.epoch(), 2);
    assert_eq!(log2.used_bytes(), log.used_bytes());
    assert_eq!(store2.get(b"a"), None);
    assert_eq!(store2.get(b"b"), Some(&b"2"[..]));
    assert_eq!(store2.get(b"c"), Some(&b"3"[..]));
}

#[test]
fn group_commit_is_one_write_and_one_flush() {
    let mut disk = MemDisk::new(64);
    let (mut log, _, _) = open(&mut disk);
    let (w, f) = (disk.writes, disk.flushes);
    for i in 0..10u8 {
        log.append(&[Record::Set(&[i], b"v")]).unwrap();
    }
    assert!(log.has_pending());
    log.commit(&mut disk).unwrap();
    assert_eq!((disk.writes - w, disk.flushes - f), (1, 1));
    assert!(!log.has_pending());
    log.commit(&mut disk).unwrap(); // nothing pending: no I/O
    assert_eq!((disk.writes - w, disk.flushes - f), (1, 1));
}

#[test]
fn records_span_sectors_and_chunks() {
    // Values larger than a sector and than the recovery read chunk.
    let mut disk = MemDisk::new(2048);
    let (mut log, _, _) = open(&mut disk);
    let big = vec![0x5a; 100_000];
    for i in 0..5u8 {
        set(
            &mut log,
            &mut disk,
            &[b'k', i],
            &big[..(i as usize + 1) * 7000],
        );
    }
    set(&mut log, &mut disk, b"huge", &big);
    set(&mut log, &mut disk, b"last", b"x");
    let (_, info, store) = open(&mut disk);
    assert_eq!(info.records, 7);
    assert_eq!(store.get(b"huge").unwrap().len(), 100_000);
    assert_eq!(store.get(&[b'k', 4]).unwrap().len(), 35_000);
    assert_eq!(store.get(b"last"), Some(&b"x"[..]));
}

#[test]
fn torn_tail_stops_recovery_and_appends_after_last_good_record() {
    let mut disk = MemDisk::new(64);
    let (mut log, _, _) = open(&mut disk);
    set(&mut log, &mut disk, b"a", b"1");
    let good_end = (LOG_START + log.used_bytes()) as usize;
    set(&mut log, &mut disk, b"b", b"2");
    set(&mut log, &mut disk, b"c", b"3");
    // Tear record 2: records 3 stays intact behind it.
    disk.data[good_end + HEADER] ^= 0xff;
    let (mut log, info, store) = open(&mut disk);
    assert_eq!(info.records, 1);
    assert_eq!(store.len(), 1);
    assert_eq!(log.used_bytes() as usize, good_end - LOG_START as usize);
    // Writing the same shape again must not resurrect the stale record 3 (seq 3, old epoch).
    set(&mut log, &mut disk, b"x", b"9");
    let (_, info, store) = open(&mut disk);
    assert_eq!(info.records, 2);
    assert_eq!(store.get(b"x"), Some(&b"9"[..]));
    assert_eq!(store.get(b"c"), None);
}

#[test]
fn stale_records_of_an_older_boot_are_not_revived() {
    let mut disk = MemDisk::new(64);
    let (mut log, _, _) = open(&mut disk); // epoch 1
    set(&mut log, &mut disk, b"a", b"1"); // seq 1
    let tail = (LOG_START + log.used_bytes()) as usize;
    let log_id = Superblock::decode(&disk.data[..512])
        .unwrap()
        .unwrap()
        .log_id;
    // A record written in boot 1 (epoch 1) with seq 3 sits in the next sector, as left behind
    // by a torn commit whose first part (seq 2) was lost.
    let next_sector = (tail / SECTOR + 1) * SECTOR;
    let mut stale = Vec::new();
    encode(&mut stale, log_id, 3, 1, &Record::Set(b"z", b"z"));
    disk.data[next_sector..next_sector + stale.len()].copy_from_slice(&stale);
    // Boot 2 (epoch 2) appends seq 2 ending exactly at that sector boundary: its commit
    // zero-pads nothing after it, so the stale seq 3 directly follows a good seq 2.
    let (mut log, info, _) = open(&mut disk);
    assert_eq!(info.records, 1);
    let value = vec![b'v'; next_sector - tail - HEADER - 1];
    set(&mut log, &mut disk, b"b", &value);
    assert_eq!(LOG_START + log.used_bytes(), next_sector as u64);
    let (_, info, store) = open(&mut disk);
    assert_eq!(
        info.records, 2,
        "the stale epoch-1 record after an epoch-2 one must be ignored"
    );
    assert_eq!(store.get(b"z"), None);
    assert_eq!(store.get(b"b").map(<[u8]>::len), Some(value.len()));
}

#[test]
fn disk_full_refuses_and_keeps_going() {
    let mut disk = MemDisk::new(MIN_SECTORS);
    let (mut log, _, _) = open(&mut disk);
    let cap = log.capacity_bytes() as usize;
    assert_eq!(cap, 4096);
    let v = vec![1u8; 1000];
    let mut n = 0;
    while log.append(&[Record::Set(b"k", &v)]).is_ok() {
        n += 1;
        log.commit(&mut disk).unwrap();
    }
    assert_eq!(n, cap / (HEADER + 1 + 1000));
    assert_eq!(
        log.append(&[Record::Set(b"k", &v)]),
        Err(AppendError::DiskFull)
    );
    assert!(log.append(&[Record::Del(b"k")]).is_ok()); // small records still fit
    log.commit(&mut disk).unwrap();
    let (_, info, store) = open(&mut disk);
    assert_eq!(info.records, n as u64 + 1);
    assert!(store.is_empty());
}

#[test]
fn read_only_and_bad_disks() {
    let mut disk = MemDisk::new(64);
    let mut store = Store::new();
    let (mut log, info) = Log::open(&mut disk, true, |r| store.apply(r)).unwrap();
    assert!(info.formatted);
    assert_eq!(disk.writes, 0);
    assert_eq!(log.append(&[Record::Clear]), Err(AppendError::ReadOnly));
    assert!(matches!(
        Log::open(&mut MemDisk::new(8), false, |_| {}),
        Err(OpenError::TooSmall(8))
    ));
    let mut disk = MemDisk::new(64);
    open(&mut disk);
    disk.data[17] ^= 1;
    assert!(matches!(
        Log::open(&mut disk, false, |_| {}),
        Err(OpenError::CorruptSuperblock)
    ));
}
