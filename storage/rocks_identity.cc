// The node's identity at open: whether its log may have gone back below
// what its peers hold, and the new replica id it then continues under
// (Store::Open).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "storage/rocks_store_internal.h"
#include "util/file.h"

namespace geokv {
namespace rocks_internal {
namespace {

std::string BootId(const StoreOptions& options) {
  if (!options.boot_id.empty()) return options.boot_id;
  std::string id = ReadFile("/proc/sys/kernel/random/boot_id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

Status Errno(const std::string& what) {
  return Status::IOError(what + ": " + std::strerror(errno));
}

// What tells the marker file apart from a copy of it: its inode number and,
// where the filesystem keeps it, its birth time (a freed inode number is
// soon reused; a copy is born when it is made, whatever cp preserves).
StatusOr<std::string> StatMarker(const std::string& path) {
  struct statx st {};
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_INO | STATX_BTIME, &st) != 0) {
    if (errno == ENOENT) return std::string();
    return Errno("stat " + path);
  }
  std::string out = EncodeBigEndian64(st.stx_ino);
  if (st.stx_mask & STATX_BTIME) {
    out += EncodeBigEndian64(static_cast<uint64_t>(st.stx_btime.tv_sec));
    out += EncodeBigEndian64(st.stx_btime.tv_nsec);
  }
  return out;
}

// The identity of the marker file in `dir` (StatMarker; empty when it is
// absent), creating it durably when absent and `create`.
StatusOr<std::string> Marker(const std::string& dir, bool create) {
  const std::string path = dir + "/" + keys::kDirMarkerFile;
  GEOKV_ASSIGN_OR_RETURN(std::string found, StatMarker(path));
  if (!found.empty() || !create) return found;
  static constexpr char kText[] =
      "geokv data dir marker: a copy of this directory gets a new inode number here, and a "
      "node opening the copy then continues under a new replica id.\n";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + path);
  bool ok = ::write(fd, kText, sizeof(kText) - 1) == static_cast<ssize_t>(sizeof(kText) - 1) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Errno("write " + path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return StatMarker(path);
}

std::string OpenRunRow(Durability durability, const std::string& boot_id) {
  return std::string(1, durability == Durability::kWal ? 'w' : 'f') + boot_id;
}

}  // namespace

Status RocksStore::CheckIdentity(const std::string& dir) {
  rocksdb::ReadOptions ro;
  std::string v;
  // The ids used before.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  const std::string prefix = keys::kMetaRetiredPrefix;
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    if (it->key().size() != prefix.size() + 8 || it->value().size() < 8) {
      return Status::Corruption("bad retired id row");
    }
    RetiredId r;
    r.id = DecodeBigEndian64(it->key().data() + prefix.size());
    r.last_seq = DecodeBigEndian64(it->value().data());
    r.reason = it->value().ToString().substr(8);
    retired_.push_back(std::move(r));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "read retired ids"));
  // A later id's log continues after the earlier one's.
  std::stable_sort(retired_.begin(), retired_.end(),
                   [](const RetiredId& a, const RetiredId& b) { return a.last_seq < b.last_seq; });

  const std::string boot_id = BootId(options_);
  std::string reason;
  if (options_.new_identity) reason = "started with --new-identity";

  rocksdb::Status s = db_->Get(ro, meta_, keys::kMetaRetireAtOpen, &v);
  if (s.ok()) {
    if (reason.empty()) reason = v;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read the retire-at-open row");
  }

  s = db_->Get(ro, meta_, keys::kMetaOpenRun, &v);
  if (s.ok()) {
    if (v.empty()) return Status::Corruption("bad open run row");
    const bool wal = v[0] == 'w';
    const std::string run_boot = v.substr(1);
    if (wal && (run_boot.empty() || run_boot != boot_id) && reason.empty()) {
      reason = "the machine restarted while this node ran in --durability wal and it did not "
               "shut down cleanly: its log may have lost acknowledged entries";
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read the open run row");
  }

  s = db_->Get(ro, meta_, keys::kMetaDirMarker, &v);
  if (s.ok()) {
    GEOKV_ASSIGN_OR_RETURN(std::string marker, Marker(dir, false));
    if (marker != v && reason.empty()) {
      reason = "the data dir is a copy (its " + std::string(keys::kDirMarkerFile) +
               " file is not the one this store created): a restored copy's log is behind "
               "what its peers hold";
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read the dir marker row");
  }
  if (!reason.empty()) GEOKV_RETURN_IF_ERROR(Retire(reason));

  rocksdb::WriteBatch batch;
  if (reason.empty() && s.ok()) {
    // The marker is the recorded one.
  } else {
    // A store that never recorded its marker, or one continuing under a new
    // id (a copy's marker, or none, is replaced).
    ::unlink((dir + "/" + keys::kDirMarkerFile).c_str());
    GEOKV_ASSIGN_OR_RETURN(std::string marker, Marker(dir, true));
    batch.Put(meta_, keys::kMetaDirMarker, marker);
  }
  batch.Put(meta_, keys::kMetaOpenRun, OpenRunRow(options_.durability, boot_id));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Write(wo, &batch), "record the run");
}

Status RocksStore::Retire(const std::string& reason) {
  const ReplicaId old = node_id_;
  const uint64_t last = last_seq_.load();
  std::random_device rd;
  ReplicaId fresh = 0;
  auto used = [&](ReplicaId id) {
    if (id == 0 || id == old || applied_.count(id) != 0) return true;
    return std::any_of(retired_.begin(), retired_.end(),
                       [id](const RetiredId& r) { return r.id == id; });
  };
  while (used(fresh)) fresh = (uint64_t{rd()} << 32) | rd();

  rocksdb::WriteBatch batch;
  batch.Put(meta_, keys::kMetaNodeId, EncodeBigEndian64(fresh));
  std::string row = EncodeBigEndian64(last);
  row += reason;
  batch.Put(meta_, keys::RetiredRow(old), row);
  // This store holds the old id's log through `last`, and nothing after.
  uint64_t held = last;
  if (auto a = applied_.find(old); a != applied_.end()) held = std::max(held, a->second);
  batch.Put(meta_, keys::WatermarkRow(old), EncodeBigEndian64(held));
  // The new id's log starts after `last`: every peer finds it trimmed and is
  // repaired by anti-entropy, which also brings it the old id's writes it
  // missed.
  batch.DeleteRange(log_, keys::LogRow(0), keys::LogRow(last + 1));
  batch.Put(meta_, keys::kMetaLogTrimmed, EncodeBigEndian64(last));
  batch.Delete(meta_, keys::kMetaRetireAtOpen);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "take a new replica id"));

  node_id_ = fresh;
  {
    std::lock_guard<std::mutex> l(applied_mu_);
    applied_[old] = held;
  }
  trimmed_.store(last);
  retired_.push_back(RetiredId{old, last, reason});
  identity_change_ = reason;
  return Status::OK();
}

Status RocksStore::RetireAtNextOpen(const std::string& why) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, meta_, keys::kMetaRetireAtOpen, why), "record the retirement");
}

void RocksStore::CloseRun() {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  // Failing leaves the run marked unclean, which is safe.
  db_->Delete(wo, meta_, keys::kMetaOpenRun).PermitUncheckedError();
}

}  // namespace rocks_internal
}  // namespace geokv
