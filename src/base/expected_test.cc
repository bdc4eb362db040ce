#include "base/expected.h"

#include <gtest/gtest.h>

#include <memory>

namespace kvmm {
namespace {

Expected<int> parse_positive(int value) {
    if (value <= 0)
        return Error::format("value {} is not positive", value);
    return value;
}

Expected<int> doubled(int value) {
    int const parsed = TRY(parse_positive(value));
    return parsed * 2;
}

Expected<void> check(int value) {
    TRY(parse_positive(value));
    return {};
}

TEST(Expected, TryPropagatesValue) { EXPECT_EQ(doubled(21).value(), 42); }

TEST(Expected, TryPropagatesErrorWithMessage) {
    auto result = doubled(-3);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().message(), "value -3 is not positive");
}

TEST(Expected, VoidSpecialisationCarriesError) {
    EXPECT_TRUE(check(1).has_value());
    EXPECT_FALSE(check(0).has_value());
}

TEST(Expected, ConvertsDerivedPointers) {
    struct Base {
        virtual ~Base() = default;
    };
    struct Derived : Base {};
    Expected<std::unique_ptr<Base>> result = std::make_unique<Derived>();
    EXPECT_TRUE(result.has_value());
}

TEST(Error, WithContextPrefixesAndKeepsErrno) {
    auto error = Error::from_errno("open", ENOENT).with_context("kernel");
    EXPECT_EQ(error.error_number(), ENOENT);
    EXPECT_EQ(error.message().rfind("kernel: open: ", 0), 0u);
}

} // namespace
} // namespace kvmm
