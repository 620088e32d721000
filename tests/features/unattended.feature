Feature: The logger runs unattended
  `hxlog run` samples every interval into the outbox, one log line per
  sample, and stops cleanly when systemd sends SIGTERM.

  Scenario: a sensor is unplugged mid-run
    Given a heat exchanger with sensors T1 to T4 on the 1-Wire bus
    And the logger is running
    And at least 2 samples have been recorded
    When T4 is unplugged
    Then T4 is soon recorded as missing with quality "not_found"
    And the logger keeps recording T1, T2 and T3
    When the logger is stopped with SIGTERM
    Then it exits cleanly
    And every sample in the outbox was logged
