// Expected<T>: either a T or an Error, in the spirit of C++23 std::expected,
// which g++ 12 does not offer in C++20 mode. Kept deliberately small.
//
// TRY(expr) evaluates an Expected and returns its Error from the enclosing
// function on failure; otherwise it yields the value (GNU statement
// expression, supported by g++ and clang). MUST(expr) aborts on failure and is
// meant for tests and for states that are impossible by construction.
#pragma once

#include "base/error.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace kvmm {

template <typename T>
class [[nodiscard]] Expected {
public:
    using ValueType = T;

    Expected(T value) : m_storage(std::in_place_index<0>, std::move(value)) {}
    Expected(Error error) : m_storage(std::in_place_index<1>, std::move(error)) {}

    // Allows `return some_derived_value;` where T is e.g. unique_ptr<Base>.
    // clang-format off
    // (clang-format 14 cannot lay out requires-clauses.)
    template <typename U>
        requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, T> &&
                 !std::is_same_v<std::decay_t<U>, Error>)
    Expected(U&& value) : m_storage(std::in_place_index<0>, T(std::forward<U>(value))) {}
    // clang-format on

    bool has_value() const { return m_storage.index() == 0; }
    explicit operator bool() const { return has_value(); }

    T& value() & { return std::get<0>(m_storage); }
    T const& value() const& { return std::get<0>(m_storage); }
    T&& value() && { return std::get<0>(std::move(m_storage)); }
    T* operator->() { return &value(); }
    T const* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    T const& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }

    Error const& error() const& { return std::get<1>(m_storage); }
    Error&& error() && { return std::get<1>(std::move(m_storage)); }

    // Prefixes the error, if any, with "<context>: ".
    Expected with_context(std::string_view context) && {
        if (has_value())
            return std::move(*this);
        return error().with_context(context);
    }

    // Used by TRY; moves the error out.
    Error release_error() { return std::get<1>(std::move(m_storage)); }
    T release_value() { return std::get<0>(std::move(m_storage)); }

private:
    std::variant<T, Error> m_storage;
};

template <>
class [[nodiscard]] Expected<void> {
public:
    using ValueType = void;

    Expected() = default;
    Expected(Error error) : m_error(std::move(error)) {}

    bool has_value() const { return !m_error.has_value(); }
    explicit operator bool() const { return has_value(); }
    void value() const {}

    Error const& error() const& { return *m_error; }
    Expected with_context(std::string_view context) && {
        if (has_value())
            return {};
        return m_error->with_context(context);
    }
    Error release_error() { return std::move(*m_error); }
    void release_value() {}

private:
    std::optional<Error> m_error;
};

} // namespace kvmm

#define TRY(expression)                                                                                                \
    ({                                                                                                                 \
        auto _kvmm_try_result = (expression);                                                                          \
        if (!_kvmm_try_result.has_value()) [[unlikely]]                                                                \
            return _kvmm_try_result.release_error();                                                                   \
        _kvmm_try_result.release_value();                                                                              \
    })

#define MUST(expression)                                                                                               \
    ({                                                                                                                 \
        auto _kvmm_must_result = (expression);                                                                         \
        if (!_kvmm_must_result.has_value()) [[unlikely]] {                                                             \
            std::fprintf(stderr, "MUST failed at %s:%d: %s\n", __FILE__, __LINE__,                                     \
                         _kvmm_must_result.error().message().c_str());                                                 \
            std::abort();                                                                                              \
        }                                                                                                              \
        _kvmm_must_result.release_value();                                                                             \
    })
