// Command-line parsing shared by every geokv binary (CLI11).

#ifndef GEOKV_UTIL_CLI_H_
#define GEOKV_UTIL_CLI_H_

#include <CLI/CLI.hpp>

#include <optional>

namespace geokv {

// Exit code of a binary whose command line is malformed.
inline constexpr int kExitUsage = 2;

// Parses `argv` into `app`. Returns nullopt when the program should go on,
// or the code to exit with: 0 after printing --help, kExitUsage after
// printing what was wrong with the command line (or the --config file).
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return 0;
  } catch (const CLI::CallForAllHelp& e) {
    app.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace geokv

#endif  // GEOKV_UTIL_CLI_H_
