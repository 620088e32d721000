Feature: Simulated data is always marked
  The simulated heat exchanger is for laptops and demos. It is never a
  silent fallback on real hardware, and every output says when data is mock.

  Scenario: mock mode is marked
    Given a heat exchanger with sensors T1 to T4 on the 1-Wire bus
    And USE_MOCK_SENSORS is set to "true"
    When I take one sample
    Then the printed sample is marked [MOCK]
    When I take one sample as JSON
    Then the JSON says mock is true
    When I export since 1h as CSV
    Then every exported row has source "mock"
    When I ask for the status
    Then the status says MOCK

  Scenario: mock runs are marked in the log
    Given a logger folder without a 1-Wire bus
    And the logger is running
    And at least 2 samples have been recorded
    When the logger is stopped with SIGTERM
    Then it exits cleanly
    And every sample in the outbox was logged
    And every logged sample line says "[MOCK]"

  Scenario: an unplugged sensor on a real bus is missing, not simulated
    Given a heat exchanger with sensors T1 to T4 on the 1-Wire bus
    And the sensor source is "auto"
    And T1 is not plugged in
    When I take one sample
    Then the sample's source is "w1"
    And T1 is recorded as missing with quality "not_found"
    And T2, T3 and T4 are recorded with their temperatures
