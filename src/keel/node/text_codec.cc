#include "keel/node/text_codec.h"

#include <charconv>

namespace keel::node::detail {
namespace {

// Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count from 1970-01-01.
void civil_from_days(std::int64_t days, std::int64_t& year, unsigned& month, unsigned& day) {
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned mp = (5 * day_of_year + 2) / 153;
  day = day_of_year - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<std::int64_t>(year_of_era) + era * 400 + (month <= 2 ? 1 : 0);
}

void append_digits(std::string& out, std::uint64_t value, int width) {
  char buffer[20];
  for (int i = width - 1; i >= 0; --i) {
    buffer[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(buffer, static_cast<std::size_t>(width));
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  append_json_escaped(out, text);
  out.push_back('"');
}

void append_uint(std::string& out, std::uint64_t value) {
  char buffer[20];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, end);
}

void append_int(std::string& out, std::int64_t value) {
  char buffer[21];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, end);
}

void append_rfc3339(std::string& out, std::int64_t unix_ns) {
  constexpr std::int64_t kNsPerSecond = 1'000'000'000;
  constexpr std::int64_t kSecondsPerDay = 86400;
  std::int64_t seconds = unix_ns / kNsPerSecond;
  std::int64_t ns = unix_ns % kNsPerSecond;
  if (ns < 0) ns += kNsPerSecond, --seconds;  // floor, for times before 1970
  std::int64_t days = seconds / kSecondsPerDay;
  std::int64_t second_of_day = seconds % kSecondsPerDay;
  if (second_of_day < 0) second_of_day += kSecondsPerDay, --days;
  std::int64_t year;
  unsigned month, day;
  civil_from_days(days, year, month, day);
  // int64 nanoseconds span 1677 to 2262: always four digits of year.
  append_digits(out, static_cast<std::uint64_t>(year), 4);
  out.push_back('-');
  append_digits(out, month, 2);
  out.push_back('-');
  append_digits(out, day, 2);
  out.push_back('T');
  append_digits(out, static_cast<std::uint64_t>(second_of_day / 3600), 2);
  out.push_back(':');
  append_digits(out, static_cast<std::uint64_t>(second_of_day / 60 % 60), 2);
  out.push_back(':');
  append_digits(out, static_cast<std::uint64_t>(second_of_day % 60), 2);
  out.push_back('.');
  append_digits(out, static_cast<std::uint64_t>(ns), 9);
  out.push_back('Z');
}

std::string quote_for_message(std::string_view text, std::size_t limit) {
  bool cut = false;
  if (text.size() > limit) {
    std::size_t end = limit;
    // Back up to a lead byte so the cut keeps whole characters.
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) --end;
    text = text.substr(0, end);
    cut = true;
  }
  std::string out;
  append_json_string(out, text);
  if (cut) out.insert(out.size() - 1, "...");
  return out;
}

}  // namespace keel::node::detail
