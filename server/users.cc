#include "server/users.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "util/coding.h"
#include "util/log_limiter.h"
#include "util/private_file.h"

namespace geokv {
namespace {

// A users file is at most this large (some ten thousand users).
constexpr size_t kMaxUsersFileBytes = 4 << 20;
constexpr size_t kMaxNameBytes = 64;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-' || c == '@';
}

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// The blank-separated words of `line`.
std::vector<std::string_view> Words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsBlank(line[i])) ++i;
    const size_t start = i;
    while (i < line.size() && !IsBlank(line[i])) ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

Status LineError(size_t number, const std::string& what) {
  return Status::InvalidArgument("line " + std::to_string(number) + ": " + what);
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kRead: return "read";
    case Role::kWrite: return "write";
    case Role::kAdmin: return "admin";
  }
  return "read";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "read") return Role::kRead;
  if (name == "write") return Role::kWrite;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

Status CheckRole(Role role, Role needed, std::string_view what) {
  if (role >= needed) return Status::OK();
  return Status::PermissionDenied(std::string(what) + " needs the " + RoleName(needed) +
                                  " role; this connection's user has " + RoleName(role));
}

StatusOr<std::map<std::string, User, std::less<>>> ParseUsers(std::string_view text) {
  std::map<std::string, User, std::less<>> users;
  size_t number = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++number;
    const auto words = Words(line);
    if (words.empty() || words[0][0] == '#') continue;
    if (words.size() != 3) {
      return LineError(number, "a user is NAME ROLE SECRET_HASH (or - for none), not " +
                                   std::to_string(words.size()) + " words");
    }
    const std::string_view name = words[0];
    if (name.size() > kMaxNameBytes) {
      return LineError(number, "a user name is at most " + std::to_string(kMaxNameBytes) +
                                   " bytes");
    }
    for (char c : name) {
      if (!IsNameChar(c)) {
        return LineError(number, "user name '" + PrintableBytes(name) +
                                     "' may hold only letters, digits and . _ - @");
      }
    }
    auto role = ParseRole(words[1]);
    if (!role) {
      return LineError(number, "role '" + PrintableBytes(words[1]) +
                                   "' is none of read, write, admin");
    }
    User user{std::string(name), *role, std::nullopt};
    if (words[2] != "-") {
      auto secret = ParseSecretHash(words[2]);
      if (!secret.ok()) return LineError(number, secret.status().message());
      user.secret = std::move(secret).value();
    }
    if (!users.emplace(user.name, std::move(user)).second) {
      return LineError(number, "user '" + std::string(name) + "' appears twice");
    }
  }
  if (users.empty()) return Status::InvalidArgument("holds no user");
  return users;
}

StatusOr<std::map<std::string, User, std::less<>>> LoadUsers(const std::string& path) {
  const std::string what = "users file";
  auto text = ReadPrivateFile(path, what, kMaxUsersFileBytes);
  if (!text.ok()) return text.status();
  auto users = ParseUsers(*text);
  if (!users.ok()) return users.status().WithContext(what + " " + path);
  return users;
}

StatusOr<std::unique_ptr<Authenticator>> Authenticator::Open(std::string path, AsyncStore& store,
                                                             Metrics& metrics) {
  auto users = LoadUsers(path);
  if (!users.ok()) return users.status();
  return std::unique_ptr<Authenticator>(new Authenticator(
      std::move(path), store, metrics, std::make_shared<const Users>(std::move(users).value())));
}

Authenticator::Authenticator(std::string path, AsyncStore& store, Metrics& metrics,
                             std::shared_ptr<const Users> users)
    : path_(std::move(path)), store_(store), metrics_(metrics), checks_(*this) {
  decoy_.salt.assign(16, 'd');
  decoy_.hash.assign(32, 'd');
  Use(std::move(users));
}

void Authenticator::Use(std::shared_ptr<const Users> users) {
  users_ = std::move(users);
  // The decoy costs what the costliest stored secret does.
  decoy_.iterations = kMinSecretIterations;
  for (const auto& [name, user] : *users_) {
    if (user.secret && user.secret->iterations > decoy_.iterations) {
      decoy_.iterations = user.secret->iterations;
    }
  }
}

Status Authenticator::Reload() {
  auto users = LoadUsers(path_);
  if (!users.ok()) return users.status();
  Use(std::make_shared<const Users>(std::move(users).value()));
  return Status::OK();
}

std::optional<Role> Authenticator::CertifiedRole(std::string_view name) const {
  auto it = users_->find(name);
  if (it == users_->end()) return std::nullopt;
  return it->second.role;
}

kj::Promise<StatusOr<Role>> Authenticator::Login(std::string user, std::string secret) {
  if (checking_ >= kMaxChecking) {
    metrics_.logins_busy.Increment();
    return StatusOr<Role>(Status::Unavailable(
        "too many logins are being checked; retry in a moment"));
  }
  if (user.empty() || user.size() > kMaxNameBytes || secret.empty() ||
      secret.size() > kMaxSecretBytes) {
    metrics_.logins_refused.Increment();
    return StatusOr<Role>(Status::Unauthenticated("no such user, or a wrong secret"));
  }
  auto it = users_->find(user);
  const bool known = it != users_->end() && it->second.secret.has_value();
  SecretHash hash = known ? *it->second.secret : decoy_;
  const Role role = known ? it->second.role : Role::kRead;
  ++checking_;
  auto check = store_
                   .RunBackground([hash = std::move(hash), secret = std::move(secret)](Store&) {
                     return SecretMatches(hash, secret);
                   })
                   .attach(kj::defer([this] { --checking_; }))
                   .fork();
  checks_.add(check.addBranch().ignoreResult());
  return check.addBranch().then(
      [this, known, role, user = std::move(user)](bool matches) -> StatusOr<Role> {
        if (known && matches) {
          metrics_.logins_ok.Increment();
          return role;
        }
        metrics_.logins_refused.Increment();
        uint64_t held_back = 0;
        if (refusals_logged_.Allow(LogLimiter::Clock::now(), &held_back)) {
          spdlog::warn("login refused for user '{}' (unknown, or a wrong secret); {} more "
                       "refused since the last such line",
                       PrintableBytes(user), held_back);
        }
        return Status::Unauthenticated("no such user, or a wrong secret");
      });
}

void Authenticator::taskFailed(kj::Exception&& e) {
  spdlog::warn("a secret check failed: {}", e.getDescription().cStr());
}

}  // namespace geokv
