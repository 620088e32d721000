Feature: A reading that cannot be trusted is missing, never a number
  The logger reads four DS18B20 sensors through the Linux w1-therm driver.
  When a read goes wrong the sample records the reading as missing, with a
  quality code and a reason naming the file, and keeps the other sensors.

  Background:
    Given a heat exchanger with sensors T1 to T4 on the 1-Wire bus

  Scenario: a CRC error is a missing reading, never a number
    Given the kernel reports a CRC error for T2
    When I take one sample
    Then T2 is recorded as missing with quality "crc_no"
    And the reason for T2 names its w1_slave file
    And T1, T3 and T4 are recorded with their temperatures

  Scenario: a genuine 85 °C reading is kept but a power-on 85 °C is missing
    Given T1 reads a genuine 85.0 °C
    And T2 reports the power-on value 85.0 °C
    When I take one sample
    Then T1 is recorded as 85.0 °C
    And T2 is recorded as missing with quality "power_on_reset"
    And T3 and T4 are recorded with their temperatures

  Scenario: a negative temperature comes from the scratchpad, not the truncated t=
    When I take one sample
    Then T3 is recorded as -0.3125 °C

  Scenario Outline: every kind of bad read is recorded as missing with its code
    Given T3 has the fault "<fault>"
    When I take one sample
    Then T3 is recorded as missing with quality "<fault>"
    And the reason for T3 names its <file>
    And T1, T2 and T4 are recorded with their temperatures

    Examples:
      | fault              | file          |
      | crc_no             | w1_slave file |
      | empty              | w1_slave file |
      | garbage            | w1_slave file |
      | crc_mismatch       | w1_slave file |
      | all_zero           | w1_slave file |
      | power_on_reset     | w1_slave file |
      | insufficient_power | w1_slave file |
      | out_of_range       | w1_slave file |
      | not_found          | sensor folder |

  Scenario: the sensor list shows bus trouble
    Given T4 is not plugged in
    And a phantom device 00-400000000000 on the bus
    When I list the sensors
    Then the sensor list shows T4 as missing and warns about the phantom 00-400000000000
