// Users and roles of the client ports (--users FILE): who may log in, with
// what secret, and what each may do. docs/operations.md#users says how to
// run it, docs/formats.md#users-file gives the file.
//
// Roles are ordered: `read` runs reads (and info, cluster, owners,
// waitReplicated); `write` also writes; `admin` also makes a node leave,
// removes members and sees info's peer details. A node without --users
// serves every connection as admin.
//
// Thread safety: Authenticator lives on the KJ event loop's thread; the
// secret checks it starts run on the reader pool.

#ifndef GEOKV_SERVER_USERS_H_
#define GEOKV_SERVER_USERS_H_

#include <kj/async.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "monitoring/metrics.h"
#include "storage/async_store.h"
#include "util/log_limiter.h"
#include "util/secret_hash.h"
#include "util/status.h"

namespace geokv {

enum class Role : uint8_t { kRead, kWrite, kAdmin };

// "read", "write", "admin".
const char* RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);

// OK when `role` may run what needs `needed`, else PermissionDenied naming
// `what` (e.g. "set", "leave") and the role it needs.
Status CheckRole(Role role, Role needed, std::string_view what);

struct User {
  std::string name;
  Role role = Role::kRead;
  // nullopt: the user logs in only with a client certificate naming it.
  std::optional<SecretHash> secret;
};

// A users file's lines: `NAME ROLE SECRET_HASH` (or `-` for no secret);
// blank lines and lines starting with '#' are skipped. InvalidArgument
// naming the line when one is malformed, a name repeats, or there are none.
StatusOr<std::map<std::string, User, std::less<>>> ParseUsers(std::string_view text);
// The file at `path` (mode 600, at most 4 MiB), parsed.
StatusOr<std::map<std::string, User, std::less<>>> LoadUsers(const std::string& path);

class Authenticator : private kj::TaskSet::ErrorHandler {
 public:
  // At most this many secret checks run at once; a login beyond them is
  // refused as unavailable rather than queued.
  static constexpr size_t kMaxChecking = 4;

  // Loads the users file at `path`. `store` (whose reader pool checks
  // secrets) and `metrics` must outlive the authenticator.
  static StatusOr<std::unique_ptr<Authenticator>> Open(std::string path, AsyncStore& store,
                                                       Metrics& metrics);

  // Reads the file again; on any error the users in force stay, and the
  // error says why. Connections already logged in keep their role.
  Status Reload();

  // The role of the user a client certificate names; nullopt when the
  // name is no user's.
  std::optional<Role> CertifiedRole(std::string_view name) const;

  // Checks `secret` against `user`'s, off the loop. Resolves with the
  // user's role, Unauthenticated when the user is unknown, has no secret or
  // the secret does not match (the same message, after the same work, for
  // all three; at once for a user or secret of no possible length), or
  // Unavailable when kMaxChecking checks are under way.
  kj::Promise<StatusOr<Role>> Login(std::string user, std::string secret);

  size_t users() const { return users_->size(); }

 private:
  using Users = std::map<std::string, User, std::less<>>;
  Authenticator(std::string path, AsyncStore& store, Metrics& metrics,
                std::shared_ptr<const Users> users);
  void Use(std::shared_ptr<const Users> users);

  const std::string path_;
  AsyncStore& store_;
  Metrics& metrics_;
  std::shared_ptr<const Users> users_;
  // Checked against when the user is unknown, so that the answer takes as
  // long as for a wrong secret.
  SecretHash decoy_;
  void taskFailed(kj::Exception&& e) override;

  // Checks on the reader pool; each counts until it ends there, also when
  // the login that asked for it was dropped (its connection closed).
  size_t checking_ = 0;
  LogLimiter refusals_logged_;
  kj::TaskSet checks_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_USERS_H_
