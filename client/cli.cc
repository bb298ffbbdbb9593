// geokv-cli: one command against one geokv node, redis-cli style.
//
//   geokv-cli [--connect HOST:PORT] [--tls-ca FILE] [--user NAME] [--json] COMMAND ARGS...
//   geokv-cli hash-secret [--iterations N] < SECRET
//
// Exit codes: 0 ok, 1 not found, 2 usage error, 3 error from the server,
// 4 cannot connect (or no answer within --timeout).

#include <kj/async-io.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "client/cli_output.h"
#include "client/connection.h"
#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "util/cli.h"
#include "util/coding.h"
#include "util/json.h"
#include "util/secret_hash.h"
#include "util/tls.h"

namespace geokv {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitNotFound = 1;
constexpr int kExitServerError = 3;
constexpr int kExitCannotConnect = 4;

struct Settings {
  std::string connect = "127.0.0.1:7400";
  bool json = false;
  double timeout_seconds = 10;
  std::vector<std::string> tokens_hex;
  std::string consistency = "default";
  ClientTlsOptions tls;
  ClientLogin login;
  std::string secret_file;
  uint32_t iterations = kDefaultSecretIterations;
};

// hash-secret: the users file's hash of the secret on the first line of
// standard input.
int HashSecretFromStdin(uint32_t iterations) {
  std::string secret;
  if (!std::getline(std::cin, secret) || secret.empty()) {
    std::cerr << "hash-secret: give the secret on standard input\n";
    return kExitUsage;
  }
  auto hashed = HashSecret(secret, iterations);
  if (!hashed.ok()) {
    std::cerr << "hash-secret: " << hashed.status().message() << "\n";
    return kExitUsage;
  }
  std::cout << *hashed << "\n";
  return kExitOk;
}

// The secret of --user: from --secret-file's first line, else from
// GEOKV_SECRET. nullopt (having said why) when neither gives one.
std::optional<std::string> LoginSecret(const Settings& settings) {
  if (!settings.secret_file.empty()) {
    std::ifstream in(settings.secret_file);
    std::string secret;
    if (!in || !std::getline(in, secret) || secret.empty()) {
      std::cerr << "--secret-file " << settings.secret_file << ": cannot read a secret from it\n";
      return std::nullopt;
    }
    return secret;
  }
  if (const char* env = std::getenv("GEOKV_SECRET"); env != nullptr && *env != '\0') return env;
  std::cerr << "--user: give the secret in --secret-file or GEOKV_SECRET\n";
  return std::nullopt;
}

rpc::Consistency ConsistencyNamed(const std::string& name) {
  if (name == "one") return rpc::Consistency::ONE;
  if (name == "quorum") return rpc::Consistency::QUORUM;
  if (name == "all") return rpc::Consistency::ALL;
  return rpc::Consistency::DEFAULT;
}

// One member as a JSON object.
std::string MemberJson(rpc::MemberInfo::Reader m) {
  JsonObject j;
  j.Text("name", m.getName().cStr());
  j.Text("region", m.getRegion().cStr());
  j.Text("replica_id", Hex64(m.getReplicaId()));
  j.Text("state", MemberStateName(m.getState()));
  j.Unsigned("incarnation", m.getIncarnation());
  j.Text("gossip_address", m.getGossipAddress().cStr());
  j.Text("client_address", m.getClientAddress().cStr());
  j.Text("peer_address", m.getPeerAddress().cStr());
  j.Raw("owned_share", std::to_string(m.getOwnedShare()));
  j.Raw("primary_share", std::to_string(m.getPrimaryShare()));
  return j.str();
}

// The cluster as `members --json` and `ring --json` print it.
std::string ClusterJson(rpc::ClusterInfo::Reader reply) {
  std::string list = "[";
  for (auto m : reply.getMembers()) list += (list.size() > 1 ? "," : "") + MemberJson(m);
  JsonObject j;
  j.Unsigned("replication_factor", reply.getReplicationFactor());
  j.Unsigned("vnodes", reply.getVnodes());
  j.Unsigned("failure_detections", reply.getFailureDetections());
  j.Raw("members", list + "]");
  return j.str();
}

// What a command prints when its outcome is ok.
struct Printed {
  std::function<void(JsonObject&)> json;
  std::function<void()> human;
};

class Cli {
 public:
  explicit Cli(const Settings& settings) : settings_(settings) {}

  // Prints the outcome and returns the exit code.
  int Finish(rpc::Outcome::Reader outcome, const Printed& printed) const {
    auto code = outcome.getCode();
    JsonObject json;
    json.Text("outcome", OutcomeName(code));
    if (code != rpc::Outcome::Code::OK) {
      json.Text("message", outcome.getMessage().cStr());
      if (settings_.json) {
        std::cout << json.str() << "\n";
      } else if (code == rpc::Outcome::Code::NOT_FOUND) {
        std::cout << "(nil)\n";
      } else {
        std::cerr << "(error) " << OutcomeName(code) << ": " << outcome.getMessage().cStr() << "\n";
      }
      return code == rpc::Outcome::Code::NOT_FOUND ? kExitNotFound : kExitServerError;
    }
    if (settings_.json) {
      if (printed.json) printed.json(json);
      std::cout << json.str() << "\n";
    } else if (printed.human) {
      printed.human();
    }
    return kExitOk;
  }

  int FinishWrite(rpc::WriteReply::Reader reply) const {
    std::string token = ToHex(String(reply.getToken()));
    return Finish(reply.getOutcome(),
                  {[&](JsonObject& j) { j.Text("token", token); },
                   [&] { std::cout << "OK token=" << token << "\n"; }});
  }

  // Sets the request's tokens from --token; false (after printing why)
  // when one is not hex.
  template <typename Request>
  bool SetTokens(Request& request) const {
    auto list = request.initTokens(settings_.tokens_hex.size());
    for (size_t i = 0; i < settings_.tokens_hex.size(); ++i) {
      auto bytes = FromHex(settings_.tokens_hex[i]);
      if (!bytes) {
        std::cerr << "--token: not a hex string: " << settings_.tokens_hex[i] << "\n";
        return false;
      }
      list.set(i, AsData(*bytes));
    }
    return true;
  }

 private:
  const Settings& settings_;
};

// The words of the subcommands, filled by CLI11.
struct Args {
  std::string key, value, element, context_hex, after, member;
  std::vector<std::string> elements;
  int64_t delta = 0;
  uint32_t limit = 0;
  uint32_t wait_ms = 0;
};

using Client = rpc::GeoKv::Client;
// Sends one command and prints its answer; returns the exit code.
using Run = std::function<int(Client&, kj::WaitScope&)>;

class Commands {
 public:
  Commands(CLI::App& app, const Settings& settings) : app_(app), settings_(settings), cli_(settings) {
    AddAll();
  }

  // The chosen subcommand's run.
  const Run& Chosen() const { return runs_.at(app_.get_subcommands().at(0)); }

 private:
  CLI::App* Add(const char* name, const char* help, Run run) {
    CLI::App* sub = app_.add_subcommand(name, help);
    runs_[sub] = std::move(run);
    return sub;
  }
  void Key(CLI::App* sub) { sub->add_option("key", a_.key, "The key")->required(); }

  int BadHex(const char* what, const std::string& text) const {
    std::cerr << what << ": not a hex string: " << text << "\n";
    return kExitUsage;
  }

  template <typename Request>
  void SetKey(Request& req) const {
    req.setKey(AsData(a_.key));
    req.setConsistency(ConsistencyNamed(settings_.consistency));
  }

  // Sends a read with the --token tokens and finishes with `printed`.
  template <typename Request, typename MakePrinted>
  int SendRead(Request req, kj::WaitScope& ws, MakePrinted make_printed) const {
    SetKey(req);
    if (!cli_.SetTokens(req)) return kExitUsage;
    auto reply = req.send().wait(ws);
    return cli_.Finish(reply.getOutcome(), make_printed(reply));
  }

  void AddAll();

  CLI::App& app_;
  const Settings& settings_;
  Cli cli_;
  Args a_;
  std::map<CLI::App*, Run> runs_;
};

void Commands::AddAll() {
  Key(Add("set", "Set an LWW register", [this](Client& kv, kj::WaitScope& ws) {
        auto req = kv.setRequest();
        SetKey(req);
        if (!cli_.SetTokens(req)) return kExitUsage;
        req.setValue(AsData(a_.value));
        return cli_.FinishWrite(req.send().wait(ws));
      }));
  app_.get_subcommand("set")->add_option("value", a_.value, "The value")->required();

  Key(Add("get", "Read an LWW register", [this](Client& kv, kj::WaitScope& ws) {
    return SendRead(kv.getRequest(), ws, [](auto& reply) {
      std::string value = String(reply.getValue());
      return Printed{[value](JsonObject& j) { j.Bytes("value", value); },
                     [value] { std::cout << value << "\n"; }};
    });
  }));

  Key(Add("del", "Delete an LWW register and the key's counter",
          [this](Client& kv, kj::WaitScope& ws) {
            auto req = kv.delRequest();
            SetKey(req);
            if (!cli_.SetTokens(req)) return kExitUsage;
            return cli_.FinishWrite(req.send().wait(ws));
          }));

  CLI::App* mvset = Add("mvset", "Write a multi-value register sibling",
                        [this](Client& kv, kj::WaitScope& ws) {
                          auto context = FromHex(a_.context_hex);
                          if (!context) return BadHex("--context", a_.context_hex);
                          auto req = kv.mvSetRequest();
                          SetKey(req);
                          if (!cli_.SetTokens(req)) return kExitUsage;
                          req.setValue(AsData(a_.value));
                          req.setContext(AsData(*context));
                          return cli_.FinishWrite(req.send().wait(ws));
                        });
  Key(mvset);
  mvset->add_option("value", a_.value, "The value")->required();
  mvset->add_option("--context", a_.context_hex,
                    "Context (hex) from mvget: the siblings it saw are replaced");

  Key(Add("mvget", "Read a multi-value register's siblings and context",
          [this](Client& kv, kj::WaitScope& ws) {
            return SendRead(kv.mvGetRequest(), ws, [](auto& reply) {
              std::vector<std::string> values;
              for (auto v : reply.getValues()) values.push_back(String(v));
              std::string context = ToHex(String(reply.getContext()));
              return Printed{[values, context](JsonObject& j) {
                               j.BytesList("values", values);
                               j.Text("context", context);
                             },
                             [values, context] {
                               for (size_t i = 0; i < values.size(); ++i) {
                                 std::cout << i + 1 << ") " << values[i] << "\n";
                               }
                               std::cout << "context=" << context << "\n";
                             }};
            });
          }));

  CLI::App* mvdel = Add("mvdel", "Remove the multi-value siblings a context saw",
                        [this](Client& kv, kj::WaitScope& ws) {
                          auto context = FromHex(a_.context_hex);
                          if (!context) return BadHex("--context", a_.context_hex);
                          auto req = kv.mvDelRequest();
                          SetKey(req);
                          if (!cli_.SetTokens(req)) return kExitUsage;
                          req.setContext(AsData(*context));
                          return cli_.FinishWrite(req.send().wait(ws));
                        });
  Key(mvdel);
  mvdel->add_option("--context", a_.context_hex, "Context (hex) from mvget")->required();

  // sadd and srem: a key and elements.
  auto add_elements_command = [this](const char* name, const char* help, auto make_request) {
    CLI::App* sub = Add(name, help, [this, make_request](Client& kv, kj::WaitScope& ws) {
      auto req = make_request(kv);
      SetKey(req);
      if (!cli_.SetTokens(req)) return kExitUsage;
      auto list = req.initElements(a_.elements.size());
      for (size_t i = 0; i < a_.elements.size(); ++i) list.set(i, AsData(a_.elements[i]));
      return cli_.FinishWrite(req.send().wait(ws));
    });
    Key(sub);
    sub->add_option("elements", a_.elements, "The elements")->required();
  };
  add_elements_command("sadd", "Add elements to an OR-set",
                       [](Client& kv) { return kv.sAddRequest(); });
  add_elements_command("srem", "Remove elements from an OR-set",
                       [](Client& kv) { return kv.sRemRequest(); });

  CLI::App* sismember = Add("sismember", "Whether an element is in an OR-set (1 or 0)",
                            [this](Client& kv, kj::WaitScope& ws) {
                              auto req = kv.sIsMemberRequest();
                              req.setElement(AsData(a_.element));
                              return SendRead(kj::mv(req), ws, [](auto& reply) {
                                bool member = reply.getValue();
                                return Printed{
                                    [member](JsonObject& j) { j.Bool("member", member); },
                                    [member] { std::cout << (member ? 1 : 0) << "\n"; }};
                              });
                            });
  Key(sismember);
  sismember->add_option("element", a_.element, "The element")->required();

  CLI::App* smembers = Add(
      "smembers", "List an OR-set's elements (all, or one page with --limit/--after)",
      [this](Client& kv, kj::WaitScope& ws) {
        bool one_page = a_.limit != 0 || !a_.after.empty();
        std::vector<std::string> members;
        std::optional<std::string> after;
        if (!a_.after.empty()) after = a_.after;
        while (true) {
          auto req = kv.sMembersRequest();
          SetKey(req);
          if (after) {
            req.getFrom().setAfter(AsData(*after));
          } else {
            req.getFrom().setStart();
          }
          req.setLimit(a_.limit);
          if (!cli_.SetTokens(req)) return kExitUsage;
          auto reply = req.send().wait(ws);
          for (auto e : reply.getElements()) members.push_back(String(e));
          bool more = reply.getMore();
          if (reply.getOutcome().getCode() == rpc::Outcome::Code::OK && more && !one_page &&
              !members.empty()) {
            after = members.back();
            continue;
          }
          return cli_.Finish(reply.getOutcome(),
                             {[&](JsonObject& j) {
                                j.BytesList("members", members);
                                j.Bool("more", more);
                              },
                              [&] {
                                for (const auto& m : members) std::cout << m << "\n";
                              }});
        }
      });
  Key(smembers);
  smembers->add_option("--after", a_.after, "Start after this element");
  smembers->add_option("--limit", a_.limit, "Elements in the page (server caps it)");

  Key(Add("scard", "Number of elements in an OR-set", [this](Client& kv, kj::WaitScope& ws) {
    return SendRead(kv.sCardRequest(), ws, [](auto& reply) {
      uint64_t count = reply.getCount();
      return Printed{[count](JsonObject& j) { j.Unsigned("count", count); },
                     [count] { std::cout << count << "\n"; }};
    });
  }));

  CLI::App* incrby = Add("incrby", "Add to a counter (negative to subtract)",
                         [this](Client& kv, kj::WaitScope& ws) {
                           auto req = kv.incrByRequest();
                           SetKey(req);
                           if (!cli_.SetTokens(req)) return kExitUsage;
                           req.setDelta(a_.delta);
                           return cli_.FinishWrite(req.send().wait(ws));
                         });
  Key(incrby);
  incrby->add_option("delta", a_.delta, "Amount to add")->required();

  Key(Add("counter", "Read a counter", [this](Client& kv, kj::WaitScope& ws) {
    return SendRead(kv.counterGetRequest(), ws, [](auto& reply) {
      int64_t value = reply.getValue();
      return Printed{[value](JsonObject& j) { j.Number("value", value); },
                     [value] { std::cout << value << "\n"; }};
    });
  }));

  Key(Add("type", "The types of the live values at a key", [this](Client& kv, kj::WaitScope& ws) {
    return SendRead(kv.typeRequest(), ws, [](auto& reply) {
      std::vector<std::string> types;
      for (auto t : reply.getTypes()) types.push_back(TypeName(t));
      if (types.empty()) types.push_back("none");
      return Printed{[types](JsonObject& j) { j.BytesList("types", types); },
                     [types] {
                       for (const auto& t : types) std::cout << t << "\n";
                     }};
    });
  }));

  Add("info", "Who the node is, its replication log and its peers",
      [this](Client& kv, kj::WaitScope& ws) {
    PrintInfo(kv.infoRequest().send().wait(ws), settings_.json);
    return kExitOk;
  });

  Add("members", "The members of every region this node knows, with their states",
      [this](Client& kv, kj::WaitScope& ws) {
        auto reply = kv.clusterRequest().send().wait(ws);
        if (settings_.json) {
          std::cout << ClusterJson(reply) << "\n";
          return kExitOk;
        }
        for (auto m : reply.getMembers()) {
          std::printf("%-10s %-16s %-8s inc=%-4llu client=%s peer=%s\n", m.getRegion().cStr(),
                      m.getName().cStr(), MemberStateName(m.getState()),
                      static_cast<unsigned long long>(m.getIncarnation()),
                      m.getClientAddress().cStr(), m.getPeerAddress().cStr());
        }
        return kExitOk;
      });

  Add("ring", "Each region's ring: every node's share of the keys",
      [this](Client& kv, kj::WaitScope& ws) {
        auto reply = kv.clusterRequest().send().wait(ws);
        if (settings_.json) {
          std::cout << ClusterJson(reply) << "\n";
          return kExitOk;
        }
        std::printf("replication factor %u, %u tokens per node\n", reply.getReplicationFactor(),
                    reply.getVnodes());
        for (auto m : reply.getMembers()) {
          if (m.getState() == rpc::MemberState::LEFT) continue;
          std::printf("%-10s %-16s owns %5.1f%% of the keys, first owner of %5.1f%%\n",
                      m.getRegion().cStr(), m.getName().cStr(), 100 * m.getOwnedShare(),
                      100 * m.getPrimaryShare());
        }
        return kExitOk;
      });

  Key(Add("owners", "The nodes that own a key, in every region, in preference order",
          [this](Client& kv, kj::WaitScope& ws) {
            auto req = kv.ownersRequest();
            req.setKey(AsData(a_.key));
            auto reply = req.send().wait(ws);
            std::string list = "[";
            std::string text;
            for (auto r : reply.getRegions()) {
              std::string owners = "[";
              text += std::string(r.getRegion().cStr()) + ":";
              for (auto m : r.getOwners()) {
                owners += (owners.size() > 1 ? "," : "") + MemberJson(m);
                text += std::string(" ") + m.getName().cStr() + "(" +
                        MemberStateName(m.getState()) + ")";
              }
              JsonObject rj;
              rj.Text("region", r.getRegion().cStr());
              rj.Raw("owners", owners + "]");
              list += (list.size() > 1 ? "," : "") + rj.str();
              text += "\n";
            }
            uint32_t segment = reply.getSegment();
            return cli_.Finish(reply.getOutcome(),
                               {[&](JsonObject& j) {
                                  j.Unsigned("segment", segment);
                                  j.Raw("regions", list + "]");
                                },
                                [&] { std::cout << "segment " << segment << "\n" << text; }});
          }));

  Add("leave",
      "Make the node leave the cluster for good: it hands its keys over, then exits",
      [this](Client& kv, kj::WaitScope& ws) {
        auto reply = kv.leaveRequest().send().wait(ws);
        return cli_.Finish(reply.getOutcome(),
                           {nullptr, [] { std::cout << "OK leaving\n"; }});
      });

  CLI::App* remove = Add(
      "remove",
      "Remove a dead member of the node's region for good (one that will not come back)",
      [this](Client& kv, kj::WaitScope& ws) {
        auto req = kv.removeRequest();
        req.setMember(a_.member);
        auto reply = req.send().wait(ws);
        return cli_.Finish(reply.getOutcome(),
                           {nullptr, [this] { std::cout << "OK removed " << a_.member << "\n"; }});
      });
  remove->add_option("member", a_.member, "The member's name, or its replica id in hex")
      ->required();

  CLI::App* wait = Add(
      "wait-replicated", "Wait until regions have the writes of the --token tokens",
      [this](Client& kv, kj::WaitScope& ws) {
        auto req = kv.waitReplicatedRequest();
        if (!cli_.SetTokens(req)) return kExitUsage;
        auto regions = req.initRegions(a_.elements.size());
        for (size_t i = 0; i < a_.elements.size(); ++i) regions.set(i, a_.elements[i]);
        req.setTimeoutMs(a_.wait_ms);
        auto reply = req.send().wait(ws);
        std::vector<std::string> missing;
        for (auto m : reply.getMissing()) missing.emplace_back(m.cStr());
        if (!missing.empty() && settings_.json) {
          JsonObject j;
          j.Text("outcome", OutcomeName(reply.getOutcome().getCode()));
          j.Text("message", reply.getOutcome().getMessage().cStr());
          j.BytesList("missing", missing);
          std::cout << j.str() << "\n";
          return kExitServerError;
        }
        return cli_.Finish(reply.getOutcome(), {nullptr, [] { std::cout << "OK\n"; }});
      });
  wait->add_option("regions", a_.elements,
                   "Regions that must have the writes (default: this node's and its peers')");
  wait->add_option("--wait", a_.wait_ms, "Milliseconds to wait (default: the node's --token-wait)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{86400000}));
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) {
  using namespace geokv;
  Settings settings;
  CLI::App app{"geokv-cli: run one command against a geokv node.\n"
               "Exit codes: 0 ok, 1 not found, 2 usage error, 3 error from the server, "
               "4 cannot connect."};
  app.add_option("--connect", settings.connect, "HOST:PORT of the node")->capture_default_str();
  app.add_flag("--json", settings.json, "Print one JSON object per command");
  app.add_option("--timeout", settings.timeout_seconds, "Seconds to wait for the answer")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--token", settings.tokens_hex,
                 "Causal token (hex) from a write; reads wait for it, writes are ordered "
                 "after it (repeatable)");
  app.add_option("--consistency", settings.consistency,
                 "Owners a read or write waits for: one, quorum, all (default: the node's)")
      ->check(CLI::IsMember({"default", "one", "quorum", "all"}));
  app.add_option("--tls-ca", settings.tls.ca,
                 "PEM CA certificates: connect with TLS, trusting a node certificate one signed");
  app.add_option("--tls-cert", settings.tls.cert,
                 "PEM client certificate, for a node that asks for one (with --tls-key)");
  app.add_option("--tls-key", settings.tls.key, "PEM private key of --tls-cert");
  app.add_option("--tls-name", settings.tls.name,
                 "Name the node's certificate must carry (default: the host of --connect; a "
                 "node's region name fits any node of it)");
  app.add_option("--user", settings.login.user,
                 "Log in as this user (a node with --users); the secret comes from "
                 "--secret-file or the GEOKV_SECRET environment variable");
  app.add_option("--secret-file", settings.secret_file,
                 "File whose first line is --user's secret");
  app.require_subcommand(1);
  app.fallthrough();
  Commands commands(app, settings);
  CLI::App* hash_secret = app.add_subcommand(
      "hash-secret",
      "Print the users file's hash (pbkdf2-sha256) of the secret read from standard input; "
      "connects to no node");
  hash_secret->add_option("--iterations", settings.iterations, "PBKDF2 iterations")
      ->capture_default_str()
      ->check(CLI::Range(kMinSecretIterations, kMaxSecretIterations));
  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  if (hash_secret->parsed()) return HashSecretFromStdin(settings.iterations);
  if (!settings.login.user.empty()) {
    auto secret = LoginSecret(settings);
    if (!secret) return kExitUsage;
    settings.login.secret = std::move(*secret);
  }
  if ((!settings.tls.cert.empty() || !settings.tls.key.empty()) && settings.tls.ca.empty()) {
    std::fprintf(stderr, "--tls-cert and --tls-key: need --tls-ca\n");
    return kExitUsage;
  }
  if (!settings.tls.ca.empty()) {
    const ClientTlsOptions& t = settings.tls;
    auto usable = MakeTlsContext(TlsContextOptions{TlsFiles{t.cert, t.key, t.ca}});
    if (!usable.ok()) {
      std::fprintf(stderr, "%s\n", usable.status().message().c_str());
      return kExitUsage;
    }
  }

  const Run& run = commands.Chosen();
  // The calls wait on the event loop; a watchdog ends the process if the
  // node does not answer in time (the loop cannot be interrupted mid-wait).
  std::mutex mu;
  std::condition_variable finished_cv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    auto timeout = std::chrono::duration<double>(settings.timeout_seconds);
    if (!finished_cv.wait_for(lock, timeout, [&] { return finished; })) {
      std::fprintf(stderr, "no answer from %s within %g s\n", settings.connect.c_str(),
                   settings.timeout_seconds);
      std::fflush(stdout);
      std::_Exit(kExitCannotConnect);
    }
  });
  int code = kExitCannotConnect;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    capnp::ReaderOptions reader;
    reader.traversalLimitInWords = (size_t{1} << 30) / sizeof(capnp::word);
    ClientConnection connection(settings.connect, settings.tls, reader);
    Client kv = connection.Main(settings.login);
    code = run(kv, connection.ws());
  })) {
    bool transport = e->getType() == kj::Exception::Type::DISCONNECTED;
    std::cerr << (transport ? "cannot connect to " + settings.connect + ": " : "(error) ")
              << e->getDescription().cStr() << "\n";
    code = transport ? kExitCannotConnect : kExitServerError;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  }
  finished_cv.notify_one();
  watchdog.join();
  return code;
}
