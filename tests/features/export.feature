Feature: Exporting a window of samples
  `hxlog export` writes the samples of a window, oldest first, as CSV or
  JSON lines, for spreadsheets and notebooks.

  Background:
    Given 100 simulated samples 1 minute apart

  Scenario: export of a window is oldest first
    When I export since 30m as CSV
    Then 30 rows are exported
    And the rows are oldest first, 1 minute apart
    And every exported row has source "mock"

  Scenario: a window with an end excludes the end
    When I export since 2026-01-01 until the 50th sample as CSV
    Then 49 rows are exported
    And the rows are oldest first, 1 minute apart

  Scenario: JSON lines end with the newest sample
    When I export since 2h as JSON lines
    Then 100 rows are exported
    And the rows are oldest first, 1 minute apart
    And the newest exported sample is the newest stored
