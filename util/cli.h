// Command-line parsing shared by every geokv binary (CLI11).

#ifndef GEOKV_UTIL_CLI_H_
#define GEOKV_UTIL_CLI_H_

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

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

// Checks that a numeric option is at least `min`, saying so in the error.
inline CLI::Validator AtLeast(long long min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        double v;
        if (!CLI::detail::lexical_cast(value, v)) return "'" + value + "' is not a number";
        if (v < static_cast<double>(min)) return "must be at least " + std::to_string(min);
        return {};
      },
      ">=" + std::to_string(min));
}

}  // namespace geokv

#endif  // GEOKV_UTIL_CLI_H_
