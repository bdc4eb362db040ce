#include "base/open_file_limit.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

namespace kvmm {
namespace {

// Restores the process's RLIMIT_NOFILE when the test ends, whatever it asserted.
class SavedOpenFileLimit {
public:
    SavedOpenFileLimit() { ::getrlimit(RLIMIT_NOFILE, &m_saved); }
    ~SavedOpenFileLimit() { ::setrlimit(RLIMIT_NOFILE, &m_saved); }
    SavedOpenFileLimit(SavedOpenFileLimit const&) = delete;
    SavedOpenFileLimit& operator=(SavedOpenFileLimit const&) = delete;
    rlimit const& saved() const { return m_saved; }

private:
    rlimit m_saved {};
};

TEST(RaiseOpenFileLimit, LowSoftLimit_IsRaisedToTheHardLimit) {
    SavedOpenFileLimit saved;
    if (saved.saved().rlim_max <= 512)
        GTEST_SKIP() << "the hard limit (" << saved.saved().rlim_max << ") leaves no room to lower the soft one";
    rlimit lowered { 512, saved.saved().rlim_max };
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);

    auto raised = raise_open_file_limit();
    ASSERT_TRUE(raised) << raised.error().message();
    EXPECT_EQ(raised->previous_soft, 512u);
    EXPECT_EQ(raised->soft, saved.saved().rlim_max);
    EXPECT_EQ(raised->hard, saved.saved().rlim_max);
    rlimit now {};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
    EXPECT_EQ(now.rlim_cur, saved.saved().rlim_max);
}

TEST(RaiseOpenFileLimit, SoftEqualToHard_IsLeftAlone) {
    SavedOpenFileLimit saved;
    rlimit equal { saved.saved().rlim_max, saved.saved().rlim_max };
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &equal), 0);
    auto raised = raise_open_file_limit();
    ASSERT_TRUE(raised) << raised.error().message();
    EXPECT_EQ(raised->previous_soft, raised->soft);
    EXPECT_EQ(raised->soft, saved.saved().rlim_max);
}

} // namespace
} // namespace kvmm
