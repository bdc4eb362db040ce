// libFuzzer target: the API socket's bytes are untrusted. The parser must end every input in
// NeedMore, Complete or Error without crashing, and never return a body longer than its limit.
// The first byte splits the input into two feeds, so requests cut at every point are explored.
#include "api/http_request_parser.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    if (size == 0)
        return 0;
    std::string_view input(reinterpret_cast<char const*>(data) + 1, size - 1);
    size_t const split = std::min<size_t>(data[0], input.size());
    kvmm::HttpRequestParser::Limits limits { .max_header_bytes = 1024, .max_body_bytes = 512 };
    kvmm::HttpRequestParser parser(limits);
    auto result = parser.feed(input.substr(0, split));
    std::string_view rest = input.substr(split);
    // Drain pipelined requests; every Complete consumes at least one byte, so this ends.
    for (int round = 0; round < 1000; ++round) {
        if (result == kvmm::HttpRequestParser::Result::Complete) {
            auto request = parser.take_request();
            if (request.body.size() > limits.max_body_bytes || request.target.empty() || request.target[0] != '/')
                std::abort();
        } else if (result == kvmm::HttpRequestParser::Result::Error) {
            if (parser.error_status() < 400 || parser.error_status() > 599)
                std::abort();
            break;
        } else if (rest.empty()) {
            break;
        }
        result = parser.feed(rest);
        rest = {};
    }
    return 0;
}
