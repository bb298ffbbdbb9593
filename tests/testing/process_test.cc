#include "testing/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>

#include "testing/test_dir.h"
#include "util/file.h"

namespace geokv::testing {
namespace {

using std::chrono::seconds;

TEST(ChildProcess, LogsOutputAndReportsExitStatus) {
  TestDir dir;
  auto child = ChildProcess::Start({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"},
                                   LogTo(dir.Sub("log")));
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  std::optional<int> status = (*child)->Wait(seconds(30));
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 3);
  EXPECT_EQ(WaitStatusText(*status), "exit status 3");
  EXPECT_EQ((*child)->Log(), "out\nerr\n");
}

TEST(ChildProcess, AppendsUnlessTruncating) {
  TestDir dir;
  for (int i = 0; i < 2; ++i) {
    auto child = ChildProcess::Start({"/bin/echo", "run"}, LogTo(dir.Sub("log")));
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE((*child)->Wait(seconds(30)));
  }
  EXPECT_EQ(ReadFile(dir.Sub("log")), "run\nrun\n");
  ChildOptions truncate = LogTo(dir.Sub("log"));
  truncate.truncate = true;
  auto child = ChildProcess::Start({"/bin/echo", "last"}, truncate);
  ASSERT_TRUE(child.ok());
  ASSERT_TRUE((*child)->Wait(seconds(30)));
  EXPECT_EQ(ReadFile(dir.Sub("log")), "last\n");
}

TEST(ChildProcess, KeepsOnlyTheDescriptorsItIsGiven) {
  TestDir dir;
  int kept[2], closed[2];
  ASSERT_EQ(pipe2(kept, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(closed, O_CLOEXEC), 0);
  ChildOptions options = LogTo(dir.Sub("log"));
  options.keep_fds = {kept[1]};
  const std::string script = "echo kept >&" + std::to_string(kept[1]) + " && echo closed >&" +
                             std::to_string(closed[1]);
  // bash: dash redirects only descriptors 0 to 9.
  auto child = ChildProcess::Start({"/bin/bash", "-c", script}, options);
  ASSERT_TRUE(child.ok());
  std::optional<int> status = (*child)->Wait(seconds(30));
  ASSERT_TRUE(status);
  // The shell could not write to the descriptor it did not inherit.
  EXPECT_NE(WEXITSTATUS(*status), 0) << (*child)->Log();
  close(kept[1]);
  close(closed[1]);
  char buf[16];
  EXPECT_EQ(read(kept[0], buf, sizeof(buf)), 5);
  EXPECT_EQ(read(closed[0], buf, sizeof(buf)), 0);
  close(kept[0]);
  close(closed[0]);
}

TEST(ChildProcess, StopAndKill) {
  TestDir dir;
  auto child = ChildProcess::Start({"/bin/sleep", "60"}, LogTo(dir.Sub("log")));
  ASSERT_TRUE(child.ok());
  EXPECT_TRUE((*child)->Running());
  std::optional<int> status = (*child)->Stop(seconds(30));
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGTERM);
  EXPECT_FALSE((*child)->Running());

  auto other = ChildProcess::Start({"/bin/sleep", "60"}, LogTo(dir.Sub("log")));
  ASSERT_TRUE(other.ok());
  int killed = (*other)->Kill();
  EXPECT_TRUE(WIFSIGNALED(killed) && WTERMSIG(killed) == SIGKILL);
}

TEST(ChildProcess, WaitForLogFindsTheGroup) {
  TestDir dir;
  auto child = ChildProcess::Start({"/bin/sh", "-c", "echo listening on port 4711; sleep 60"},
                                   LogTo(dir.Sub("log")));
  ASSERT_TRUE(child.ok());
  EXPECT_EQ((*child)->WaitForLog(std::regex("port ([0-9]+)"), seconds(30)), "4711");
}

TEST(ChildProcess, StartFailsWithoutALogDirectory) {
  auto child = ChildProcess::Start({"/bin/true"}, LogTo("/nonexistent/dir/log"));
  EXPECT_FALSE(child.ok());
}

TEST(RunCommand, CapturesStdoutAndStderrApart) {
  TestDir dir;
  CommandResult r = RunCommand({"/bin/sh", "-c", "echo out; echo err >&2; exit 2"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST(RunCommand, KillsAfterTheTimeout) {
  TestDir dir;
  CommandResult r = RunCommand({"/bin/sleep", "60"}, dir.path(), std::chrono::milliseconds(100));
  EXPECT_EQ(r.exit_code, -1);
}

}  // namespace
}  // namespace geokv::testing
